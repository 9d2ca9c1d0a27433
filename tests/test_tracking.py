"""A sweep watched where users already look: MLflow (a file store and a real tracking
server), TensorBoard event files with readable names."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow  # the mlflow extra is part of the test extra
import pytest
import yaml

from xling_ray.cli import main
from xling_ray.config import ALL_LANGUAGES, PAWSX_LANGUAGES
from xling_ray.leaderboard import read_leaderboard
from xling_ray.tune.tracking import tensorboard_name


XNLI_LANGUAGES = [l for l in ALL_LANGUAGES if l not in ("ja", "ko")]
LANGUAGE_METRICS = {f"acc_xnli_{l}" for l in XNLI_LANGUAGES} | {f"acc_pawsx_{l}" for l in PAWSX_LANGUAGES}


def test_tensorboard_names_are_grouped_by_task_and_kind():
    assert [tensorboard_name(k) for k in ("acc_xnli_th", "acc_pawsx_ko", "loss_pawsx_ce", "top_class_xnli_en",
                                           "gap_xnli", "gap", "acc_en", "acc_target", "collapsed_pawsx",
                                           "time_eval_s", "epoch")] == [
        "xnli/acc_th", "pawsx/acc_ko", "pawsx/loss_ce", "xnli/top_class_en", "gap/xnli", "gap/mean", "acc/en",
        "acc/target", "pawsx/collapsed", "time/eval_s", "epoch"]
    assert len(LANGUAGE_METRICS) == 22


def _space(tmp_path: Path, recipe, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({
        "recipe": recipe.model_dump(mode="json"), "search": {"train.lr": {"loguniform": [1e-4, 1e-3]}},
        "sweep": {"num_samples": 2, "seeds": 1, "seed": 0, "max_concurrent_trials": 1,
                  "constraint": {"metric": "acc_en", "baseline": 40.0, "delta": 0.0}}}))
    return path


@pytest.fixture(scope="module")
def tracked_run(ray_local, tiny_recipe, tmp_path_factory):
    """Two trials of two epochs each on both tasks, logged to an MLflow file store."""
    tmp = tmp_path_factory.mktemp("tracked")
    space = _space(tmp, tiny_recipe.with_updates({"train.epochs": 2}))
    uri = f"file:{tmp / 'mlruns'}"
    assert main(["sweep", str(space), "--storage", str(tmp / "runs"), "--name", "t", "--quiet", "--mlflow", uri]) == 0
    return tmp / "runs" / "t", uri


def _runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("xling-ray")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _check_logged(run_dir: Path, uri: str, epochs: int) -> None:
    client, parents, children = _runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["xling_run_dir"] == str(run_dir) and parent.info.run_name == run_dir.name
    trials = read_leaderboard(run_dir / "leaderboard_trials.csv")
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trials["trial_id"])
    by_trial = trials.set_index("trial_id")
    for run in children:
        row = by_trial.loc[run.data.tags["trial_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert run.data.tags["config_id"] == row["config_id"] and int(run.data.tags["seed"]) == row["seed"]
        assert float(run.data.params["train.lr"]) == pytest.approx(row["train.lr"])
        metrics = run.data.metrics
        assert LANGUAGE_METRICS | {"gap", "gap_xnli", "gap_pawsx", "acc_en", "acc_target", "loss_xnli_ce",
                                   "loss_pawsx_ce", "epoch"} <= set(metrics)
        # The last value is the leaderboard's, and every report was logged once, at its own step.
        assert metrics["gap"] == pytest.approx(row["gap"]) and metrics["acc_xnli_th"] == pytest.approx(row["acc_xnli_th"])
        # Each trial's error bars: the sampling errors of its gaps and accuracies, as the leaderboard's.
        for key in ("gap_se", "gap_xnli_se", "gap_pawsx_se", "acc_en_se", "acc_target_se"):
            assert metrics[key] == pytest.approx(row[key]), key
        history = client.get_metric_history(run.info.run_id, "epoch")
        assert sorted((m.step, m.value) for m in history) == [(e, float(e)) for e in range(1, epochs + 1)]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "leaderboard_trials.csv", "report.html", "search_space.yaml",
            "leaderboard_predictions.npz"} <= artifacts


def test_a_sweep_logs_a_parent_run_and_a_nested_run_per_trial_to_an_mlflow_file_store(tracked_run):
    run_dir, uri = tracked_run
    _check_logged(run_dir, uri, epochs=2)
    # mlflow.search_runs, as a user reads it: the 22 language accuracies are columns.
    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(experiment_names=["xling-ray"])
    assert len(frame) == 3 and {f"metrics.{m}" for m in LANGUAGE_METRICS} <= set(frame.columns)


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files in ``folder`` (TFRecord framing, tensorboardX's protos)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_shows_every_language_under_readable_names(tracked_run):
    run_dir, _ = tracked_run
    trials = read_leaderboard(run_dir / "leaderboard_trials.csv").set_index("trial_id")
    folders = [p for p in run_dir.glob("run_trial_*") if p.is_dir()]
    assert len(folders) == 2
    for folder in folders:
        scalars = _events(folder)
        assert {tensorboard_name(m) for m in LANGUAGE_METRICS} | {"gap/xnli", "gap/pawsx", "gap/mean", "gap/mean_se",
                                                                  "gap/xnli_se", "acc/en_se"} <= set(scalars)
        assert not any(tag.startswith("ray/tune/") for tag in scalars)  # Tune's own logger was replaced, not doubled
        trial_id = next(t for t in trials.index if t in folder.name)
        assert [s for s, _ in scalars["xnli/acc_th"]] == [1, 2]
        assert scalars["gap/mean"][-1][1] == pytest.approx(trials.loc[trial_id, "gap"], abs=1e-4)


def test_the_optuna_study_is_a_journal_that_optuna_and_optuna_dashboard_open(tracked_run, tmp_path):
    import json

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    run_dir, _ = tracked_run
    journal = run_dir / "optuna.journal"
    study = optuna.load_study(study_name=run_dir.name, storage=JournalStorage(JournalFileBackend(str(journal))))
    configs = read_leaderboard(run_dir / "leaderboard.csv").set_index("config_id")
    trials = read_leaderboard(run_dir / "leaderboard_trials.csv").set_index("trial_id")
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        (tune_id,) = t.user_attrs["tune_trial_ids"]
        row = trials.loc[tune_id]
        assert t.values == [pytest.approx(row["gap"])] and t.user_attrs["gap_per_seed"] == [pytest.approx(row["gap"])]
        assert t.params["train.lr"] == pytest.approx(configs.loc[row["config_id"], "train.lr"])
        # The English floor: feasible when 40 - acc_en <= 0 (Optuna's constraint convention).
        assert t.constraints == {"acc_en": pytest.approx(40.0 - row["acc_en"]), "collapsed": float(row["collapsed"])}
        assert t.user_attrs["constraint_acc_en"] == pytest.approx(40.0 - row["acc_en"])
        assert t.user_attrs["feasible"] == (row["acc_en"] >= 40.0 and not row["collapsed"])  # collapsed: infeasible

    port = _free_port()
    # The optuna-dashboard command, as a user runs it (its console script, from this interpreter's env).
    command = Path(sys.executable).parent / "optuna-dashboard"
    dashboard = subprocess.Popen([str(command), str(journal), "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/meta", dashboard)
        studies = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10).read())
        (listed,) = studies["study_summaries"]
        assert listed["study_name"] == run_dir.name and listed["directions"] == ["minimize"]
        detail = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{listed['study_id']}", timeout=10).read())
        assert len(detail["trials"]) == 2
        assert all({a["key"] for a in t["user_attrs"]} >= {"constraint_acc_en", "feasible", "tune_trial_ids"}
                   for t in detail["trials"])
    finally:
        _stop(dashboard)


def _stop(server: subprocess.Popen) -> None:
    """Terminate a server started in a session of its own; kill its group where it outlives the signal
    (a loaded machine: its workers)."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                raise
            time.sleep(0.5)


def test_a_second_sweep_of_the_same_name_into_a_shared_optuna_database_is_refused(tiny_recipe, tmp_path, capsys):
    import optuna

    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="same", storage=db)
    space = _space(tmp_path, tiny_recipe)
    assert main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "same", "--optuna-storage", db]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "already holds a study named 'same'" in err and "--resume" in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sweep_logs_to_a_real_mlflow_tracking_server(ray_local, tiny_recipe, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{uri}/health", server)
        space = _space(tmp_path, tiny_recipe.with_updates({"train.epochs": 1}))
        assert main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "s", "--quiet",
                     "--mlflow", uri]) == 0
        _check_logged(tmp_path / "runs" / "s", uri, epochs=1)
    finally:
        _stop(server)


def test_a_wrong_tracking_uri_fails_before_ray_starts(tiny_recipe, tmp_path, capsys):
    space = _space(tmp_path, tiny_recipe)
    bad = f"file:{tmp_path / 'space.yaml'}"  # a file where the store's folder should be
    assert main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "x", "--mlflow", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"xling-ray: error: --mlflow {bad}: cannot log there"), err
    assert not (tmp_path / "runs").exists()


def test_a_database_stores_artifacts_beside_it_and_nothing_lands_in_the_working_directory(tmp_path, monkeypatch):
    """`--mlflow sqlite:///PATH/mlflow.db`: the experiment's artifacts go to PATH/mlartifacts, not to MLflow's
    default ./mlruns of wherever the command ran; the whole stage leaves the working directory empty."""
    from mlflow import MlflowClient

    from xling_ray.tune.tracking import MLflowTracking, artifact_root, check_mlflow, finish_mlflow, save_tracking

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    db = tmp_path / "db" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    run_dir = tmp_path / "runs" / "q"
    run_dir.mkdir(parents=True)
    (run_dir / "leaderboard.csv").write_text("config_id,gap\nabc,1.5\n")
    check_mlflow(uri, run_dir=str(run_dir))  # as the sweep does before Ray starts: the experiment is made here
    save_tracking(str(run_dir), "sweep", uri)
    MLflowTracking(uri, str(run_dir)).setup()  # the parent run, as Tune's callback makes it
    parent = finish_mlflow(str(run_dir), "sweep", [run_dir / "leaderboard.csv"], {})
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("xling-ray")
    assert experiment.artifact_location == (db.parent / "mlartifacts").as_uri()
    stored = db.parent / "mlartifacts" / parent / "artifacts" / "leaderboard.csv"
    assert stored.read_text() == "config_id,gap\nabc,1.5\n"
    assert [a.path for a in client.list_artifacts(parent)] == ["leaderboard.csv"]
    assert list(cwd.iterdir()) == []
    # The other stores: a relative database beside itself; a server database beside the run folders of
    # --storage; a file store and a tracking server keep their own place.
    assert artifact_root("sqlite:///m.db", str(run_dir)) == (cwd / "mlartifacts").as_uri()
    assert artifact_root("postgresql://u@host/db", str(run_dir)) == (tmp_path / "runs" / "mlartifacts").as_uri()
    assert artifact_root("postgresql://u@host/db", "s3://bucket/runs/q") == "s3://bucket/runs/mlartifacts"
    assert artifact_root(f"file:{tmp_path / 'mlruns'}", str(run_dir)) is None
    assert artifact_root("http://127.0.0.1:5000", str(run_dir)) is None
