"""Sweeps on several nodes with object storage, on one machine, the way Ray tests them.

The harness (module fixtures): an S3 server on a free loopback port (moto's
``ThreadedMotoServer``, as Ray's own ``simulate_s3_bucket``) with the ``AWS_*`` settings
every Ray process needs, and a Ray cluster of a head and two worker nodes
(``ray.cluster_utils.Cluster``, as Ray's ``python/ray/tune/tests/test_cluster.py``). The
head holds no CPU, like the head of ``cluster/aws-gpu.yaml``: trials and Ray Train workers
run on the worker nodes, one CPU and a custom resource (``node_a``, ``node_b``) each, so a
test can tell where a process ran and remove the node under it. MinIO, Ceph and R2 are
reached the same way, through an endpoint override.

Run only these with ``pytest -k multinode``.
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import assert_figures_of_an_uninterrupted_run
from xling_ray.cli import main
from xling_ray.leaderboard import read_leaderboard
from xling_ray.tune.storage import read_text

pytestmark = pytest.mark.slow  # every test here starts Ray

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "xling"
EVERY = 2  # 96 pairs / batch 16: six steps, an evaluation and a checkpoint every two
EPOCHS = [1 / 3, 2 / 3, 1.0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the harness


@dataclass
class S3:
    endpoint: str
    bucket: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def filesystem(self):
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(endpoint_override=self.endpoint, access_key="testing", secret_key="testing",
                                       region="us-east-1", scheme="http", allow_bucket_creation=True)

    def files(self, *parts: str) -> list[str]:
        """Every file under ``s3://BUCKET/parts...``, as paths inside the bucket."""
        import pyarrow.fs

        fs, root = self.filesystem(), "/".join([self.bucket, *parts])
        if fs.get_file_info(root).type == pyarrow.fs.FileType.NotFound:
            return []
        return [i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
                if i.type == pyarrow.fs.FileType.File]

    def read(self, path: str) -> str:
        with self.filesystem().open_input_stream(f"{self.bucket}/{path}") as f:
            return f.read().decode()


@pytest.fixture(scope="module")
def s3():
    """An S3 server on loopback, its bucket, and the ``AWS_*`` settings in this process's
    environment, which the cluster's processes inherit (set before the cluster starts)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        S3(endpoint, BUCKET).filesystem().create_dir(BUCKET)
        yield S3(endpoint, BUCKET)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@dataclass
class LocalCluster:
    cluster: object  # ray.cluster_utils.Cluster
    dashboard: str
    workers: dict[str, object]  # custom resource -> its node
    seen: dict[int, tuple[str, str]] = field(default_factory=dict)  # pid -> (node, process title)
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return self.cluster.address

    def raylets(self) -> dict[int, str]:
        """pid of each live worker node's raylet -> the node's custom resource."""
        return {node.all_processes["raylet"][0].process.pid: name for name, node in self.workers.items()}

    def node_of(self, pid: int) -> str:
        """The worker node (its custom resource) a Ray worker process ran on, as :meth:`watch` saw it."""
        assert pid in self.seen, f"process {pid} was seen on none of the worker nodes"
        return self.seen[pid][0]

    def watch_processes(self) -> None:
        """Every 0.1 s, note each Ray worker process of each worker node, with its title
        (``ray::ImplicitFunc``, ``ray::RayTrainWorker``...): Ray worker processes are their
        node's raylet's children, and they are gone once a run ends."""
        while not self.stopped.is_set():
            try:
                raylets = self.raylets()
            except (KeyError, IndexError, RuntimeError):  # a node being removed or added just now
                raylets = {}
            for raylet_pid, name in raylets.items():
                try:
                    children = psutil.Process(raylet_pid).children()
                except psutil.Error:
                    continue
                for child in children:
                    # Each child on its own: one that exits, or a zombie not yet reaped (cmdline() raises
                    # on it), must not hide the children listed after it.
                    try:
                        title = " ".join(child.cmdline())
                    except psutil.Error:
                        continue
                    if title.startswith("ray::") and not title.startswith("ray::IDLE"):
                        self.seen[child.pid] = (name, title)
            time.sleep(0.1)

    def replace(self, name: str) -> None:
        """Remove the worker node ``name`` (its raylet and every process on it, as a lost machine),
        and add a fresh one in its place once the test is done with it."""
        self.cluster.remove_node(self.workers.pop(name))

    def restore(self) -> None:
        for name in ("node_a", "node_b"):
            if name not in self.workers:
                self.workers[name] = self.cluster.add_node(num_cpus=1, resources={name: 1},
                                                           dashboard_agent_listen_port=_free_port())
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def cluster(s3):
    """A head (no CPU; the dashboard and its job server) and two worker nodes of one CPU each."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("PATH", "RAY_USAGE_STATS_ENABLED", "OMP_NUM_THREADS")}
    # A job's driver runs `python -m xling_ray.cli` from PATH: this venv's, as in an image.
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop("RAY_ADDRESS", None)
    port = _free_port()
    # Every node's dashboard agent on a free port: at Ray's default (52365) the head's agent, which takes
    # the submitted job, cannot listen where another Ray on this machine (a test running beside) took it.
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
        "dashboard_agent_listen_port": _free_port()})
    try:
        local = LocalCluster(c, f"http://127.0.0.1:{port}", {})
        local.restore()
        watcher = threading.Thread(target=local.watch_processes, daemon=True)
        watcher.start()
        yield local
        local.stopped.set()
        watcher.join()
    finally:
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def multinode_recipe(tiny_recipe):
    # Frozen word embeddings keep the tiny model's 250k-token table out of the checkpoints.
    return tiny_recipe.with_updates({
        "data.tasks": ["pawsx"], "data.train_size": 96, "train.epochs": 1, "train.eval_every_steps": EVERY,
        "model.freeze_word_embeddings": True, "data.heldout": {"pawsx": 12},
    })


def write_space(path: Path, recipe, **sweep) -> Path:
    path.write_text(yaml.safe_dump({
        "recipe": recipe.model_dump(mode="json"), "search": {"train.lr": {"loguniform": [1e-4, 1e-3]}},
        "sweep": {"num_samples": 2, "seeds": 1, "seed": 0, **sweep}}))
    return path


def results(s3: S3, run: str) -> dict[str, list[dict]]:
    """Trial folder -> the reports in its ``result.json`` in the bucket."""
    out = {}
    for path in s3.files("runs", run):
        if path.endswith("/result.json"):
            rows = [json.loads(line) for line in s3.read(path.split("/", 1)[1]).splitlines() if line.strip()]
            if rows:
                out[path.split("/")[-2]] = rows
    return out


def board_from_s3(s3: S3, run: str, name: str = "leaderboard_trials.csv"):
    return read_leaderboard(io.StringIO(read_text(s3.uri("runs", run), name)))


class Driver:
    """``xling-ray sweep`` (or another command) as a process of its own, output in files."""

    def __init__(self, tmp: Path, args: list[str]):
        self.out, self.err = tmp / "stdout.txt", tmp / "stderr.txt"
        self.proc = subprocess.Popen([sys.executable, "-m", "xling_ray.cli", *args], cwd=tmp, start_new_session=True,
                                     stdout=self.out.open("w"), stderr=self.err.open("w"))

    def wait_for(self, condition, timeout: float = 240):
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            found = condition()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"gave up waiting (exit {self.proc.poll()}): {self.err.read_text()[-3000:]}")

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def drivers():
    started: list[Driver] = []
    yield lambda tmp, args: started.append(Driver(tmp, args)) or started[-1]
    for d in started:
        d.kill()


def local_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- a. two nodes, S3, every command


def test_multinode_a_sweep_on_s3_runs_trials_on_two_nodes_at_once_and_every_command_reads_it_back(
        cluster, s3, multinode_recipe, tmp_path, monkeypatch, capsys):
    space = write_space(tmp_path / "space.yaml", multinode_recipe)
    work = tmp_path / "work"  # where the user types the commands: nothing of the run may land here
    work.mkdir()
    monkeypatch.chdir(work)
    run = s3.uri("runs", "a")
    assert main(["sweep", str(space), "--address", cluster.address, "--storage", s3.uri("runs"), "--name", "a",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"Leaderboard of {run}" in printed

    # Two trials at the same time on two different nodes.
    reports = results(s3, "a")
    assert len(reports) == 2
    nodes, spans = set(), []
    for rows in reports.values():
        assert [r["epoch"] for r in rows] == pytest.approx(EPOCHS)
        assert len({r["pid"] for r in rows}) == 1
        nodes.add(cluster.node_of(rows[0]["pid"]))
        spans.append((rows[0]["timestamp"] - rows[0]["time_total_s"], rows[-1]["timestamp"]))
    assert nodes == {"node_a", "node_b"}
    (start1, end1), (start2, end2) = spans
    assert max(start1, start2) < min(end1, end2), f"the trials did not overlap in time: {spans}"

    # The run is in the bucket: the space, Tune's state, each trial's results and checkpoint.
    files = s3.files("runs", "a")
    for name in ("search_space.yaml", "leaderboard.csv", "leaderboard_trials.csv", "tuner.pkl"):
        assert f"{BUCKET}/runs/a/{name}" in files, name
    assert sum("/checkpoint_" in f for f in files) >= 2
    board = board_from_s3(s3, "a")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all() and board["train.lr"].nunique() == 2
    # The configurations' error bars come from the predictions each trial kept in its checkpoint in S3.
    assert board_from_s3(s3, "a", "leaderboard.csv")["gap_se"].notna().all()

    # Every command a user runs next reads the run from the bucket.
    assert main(["leaderboard", run]) == 0
    assert "Leaderboard of" in capsys.readouterr().out
    assert main(["report", run, "-o", "report.html"]) == 0
    html = (work / "report.html").read_text()
    assert all(str(t) in html for t in board["trial_id"])
    assert main(["export", run, "--rank", "1", "-o", "best.yaml"]) == 0
    exported = yaml.safe_load((work / "best.yaml").read_text())
    assert exported["source"]["run_dir"] == run
    assert main(["final", run, "--top", "1", "--heldout", "--address", cluster.address, "--quiet"]) == 0
    final = board_from_s3(s3, "a", "final_heldout_leaderboard_trials.csv")
    assert len(final) == 1 and final.loc[0, "status"] == "TERMINATED" and final["gap"].notna().all()
    assert any(f.startswith(f"{BUCKET}/runs/a/final-heldout/") for f in s3.files("runs", "a"))
    # Nothing of the run on local disk: only the two files asked for.
    assert local_files(work) == {"report.html", "best.yaml"}


# ---------------------------------------------------------------- b. a node lost mid-trial


def test_multinode_a_node_lost_mid_trial_continues_on_another_node_from_its_s3_checkpoint(
        cluster, s3, multinode_recipe, tmp_path, drivers):
    space = write_space(tmp_path / "space.yaml", multinode_recipe, num_samples=1, max_failures=1)
    driver = drivers(tmp_path, ["sweep", str(space), "--address", cluster.address, "--storage", s3.uri("runs"),
                                "--name", "b", "--quiet"])

    def checkpointed():
        reports = results(s3, "b")
        if reports and any("/checkpoint_" in f for f in s3.files("runs", "b")):
            return next(iter(reports.items()))
        return None

    trial, rows = driver.wait_for(checkpointed)
    lost = cluster.node_of(rows[0]["pid"])
    try:
        cluster.replace(lost)  # the node and every process on it gone, as a lost machine
        assert driver.wait() == 0, driver.err.read_text()[-3000:]
    finally:
        cluster.restore()
    after = results(s3, "b")[trial]
    # Each evaluation reported once: the ones after the loss by a process on the other node.
    assert [r["epoch"] for r in after] == pytest.approx(EPOCHS)
    assert after[0]["pid"] == rows[0]["pid"]
    moved = {r["pid"] for r in after if r["pid"] != rows[0]["pid"]}
    assert len(moved) == 1 and after[-1]["pid"] in moved
    assert "retrying from its last checkpoint" in driver.out.read_text()
    board = board_from_s3(s3, "b")
    assert len(board) == 1 and board.loc[0, "status"] == "TERMINATED"

    # Its figures are those of a run never interrupted (same recipe and seed, one thread, on the CPU).
    from xling_ray.tune.sweep import load_run_space
    from xling_ray.tune.trainable import trial_recipe

    recipe = trial_recipe(load_run_space(s3.uri("runs", "b")).recipe, {"train.lr": after[-1]["config"]["train.lr"]})
    assert_figures_of_an_uninterrupted_run(after[-1], recipe)


# ---------------------------------------------------------------- c. the driver killed; resume; extend


def test_multinode_a_killed_driver_resumes_from_s3_then_the_sweep_is_extended(
        cluster, s3, multinode_recipe, tmp_path, drivers, capsys):
    # One evaluation, so one checkpoint, a trial: Tune deletes none, so the driver's kill cannot fall between
    # a deletion and the upload of the state that names the newer checkpoint (cluster/README.md, Storage).
    n = 3
    once = multinode_recipe.with_updates({"train.eval_every_steps": None})
    space = write_space(tmp_path / "space.yaml", once, num_samples=n, max_concurrent_trials=1)
    run = s3.uri("runs", "c")
    mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    driver = drivers(tmp_path, ["sweep", str(space), "--address", cluster.address, "--storage", s3.uri("runs"),
                                "--name", "c", "--mlflow", mlflow, "--quiet"])
    driver.wait_for(lambda: len(results(s3, "c")) >= 1 and any("/checkpoint_" in f for f in s3.files("runs", "c")))
    driver.kill()  # SIGKILL: no chance to save anything more
    before = results(s3, "c")
    assert 1 <= len(before) < n

    assert main(["sweep", "--resume", run, "--address", cluster.address, "--quiet"]) == 0
    trials = board_from_s3(s3, "c")
    assert len(trials) == n and (trials["status"] == "TERMINATED").all()
    assert trials["trial_id"].is_unique and trials["train.lr"].nunique() == n  # no trial, no configuration twice
    after = results(s3, "c")
    metrics = ("epoch", "gap", "acc_en", "acc_target")
    for trial, rows in after.items():
        old = before.get(trial, [])
        assert rows[:len(old)] == old, f"{trial}: reports from before the kill were lost or rewritten"
        # A trial stopped after its report resumes from that checkpoint and may report it again, unchanged:
        # it does not train again.
        assert {tuple(r[k] for k in metrics) for r in rows} == {tuple(rows[-1][k] for k in metrics)}, trial

    from xling_ray.tune.search import load_study

    study = load_study(run)
    assert [t.state.name for t in study.trials].count("COMPLETE") == n
    assert sorted(t.params["train.lr"] for t in study.trials if t.state.name == "COMPLETE") == \
        sorted(trials["train.lr"])

    # Extended to 5 configurations, on S3: the same study, the new ones only.
    capsys.readouterr()
    assert main(["sweep", "--resume", run, "--num-samples", "5", "--address", cluster.address, "--quiet"]) == 0
    extended = board_from_s3(s3, "c")
    assert len(extended) == 5 and extended["trial_id"].is_unique and extended["train.lr"].nunique() == 5
    assert set(trials["trial_id"]) < set(extended["trial_id"])
    old = extended.set_index("trial_id").loc[list(trials["trial_id"])]
    assert old["gap"].tolist() == trials.set_index("trial_id")["gap"].tolist()  # not run again
    assert len(load_study(run).trials) == 5
    assert yaml.safe_load(read_text(run, "search_space.yaml"))["sweep"]["num_samples"] == 5
    assert len(board_from_s3(s3, "c", "leaderboard.csv")) == 5

    # MLflow: one parent run, a nested run per trial, none twice.
    import mlflow as mlflow_lib

    client = mlflow_lib.MlflowClient(mlflow)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(runs) - len(children) == 1
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(extended["trial_id"])

    # Fewer configurations than it has, or another space: refused in one line.
    assert main(["sweep", "--resume", run, "--num-samples", "4"]) == 2
    assert "already has 5 configurations" in capsys.readouterr().err
    changed = yaml.safe_load(space.read_text())
    changed["search"]["train.lr"] = {"loguniform": [1e-5, 1e-3]}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    assert main(["sweep", str(tmp_path / "changed.yaml"), "--resume", run, "--num-samples", "6"]) == 2
    err = capsys.readouterr().err
    assert "differs from the sweep's at search.train.lr" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- d. a Ray job on the cluster


@pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")
def test_multinode_a_submitted_sweep_runs_as_a_ray_job_and_its_leaderboard_reads_back_from_s3(
        cluster, s3, multinode_recipe, tmp_path, capsys):
    from xling_ray.submit import job_status

    space = write_space(tmp_path / "space.yaml", multinode_recipe)
    job = f"xling-multinode-{os.getpid()}"
    rc = main(["submit", "--address", cluster.dashboard, "--job-id", job,
               "--", "sweep", str(space), "--storage", s3.uri("runs"), "--name", "d", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0, printed[-3000:]
    assert job_status(cluster.dashboard, job) == "SUCCEEDED"
    assert "Leaderboard of s3://" in printed  # the job's own output, streamed back
    board = board_from_s3(s3, "d", "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()
    trials = results(s3, "d")
    assert {cluster.node_of(rows[0]["pid"]) for rows in trials.values()} <= {"node_a", "node_b"}


# ---------------------------------------------------------------- e. DDP across nodes


def test_multinode_train_runs_its_two_ddp_workers_on_different_nodes(cluster, s3, multinode_recipe, tmp_path):
    from xling_ray.leaderboard.export import ExportedRecipe, write_exported

    recipe = multinode_recipe.with_updates({"scaling.num_workers": 2, "scaling.cpus_per_worker": 1})
    out = tmp_path / "out"
    best = tmp_path / "best.yaml"
    write_exported(ExportedRecipe(recipe=recipe, seeds=[recipe.train.seed]), best)
    before = set(cluster.seen)
    assert main(["train", str(best), "--output", str(out), "--workers", "2", "--address", cluster.address]) == 0
    workers = {pid: node for pid, (node, title) in cluster.seen.items()
               if pid not in before and title.startswith("ray::RayTrainWorker")}
    metrics = json.loads((out / "metrics.json").read_text())
    assert "gap" in metrics and (out / "pawsx" / "config.json").is_file()
    assert sorted(workers.values()) == ["node_a", "node_b"], workers


# ---------------------------------------------------------------- endpoints


def test_multinode_storage_uris_keep_their_query_after_the_path():
    from xling_ray.tune.storage import join, resolve_storage, run_dir_of, split_run_dir

    storage = "s3://b/runs/?endpoint_override=minio.local:9000&scheme=http"
    assert resolve_storage(storage) == "s3://b/runs?endpoint_override=minio.local:9000&scheme=http"
    run = run_dir_of(storage, "q")
    assert run == "s3://b/runs/q?endpoint_override=minio.local:9000&scheme=http"
    assert split_run_dir(run) == ("s3://b/runs?endpoint_override=minio.local:9000&scheme=http", "q")
    assert join(run, "final-test") == "s3://b/runs/q/final-test?endpoint_override=minio.local:9000&scheme=http"
    assert split_run_dir("s3://b/runs/q/") == ("s3://b/runs", "q") and join("gs://b/r", "x") == "gs://b/r/x"


def test_multinode_an_endpoint_given_in_the_uri_reaches_every_ray_process_without_aws_endpoint_url(
        s3, multinode_recipe, tmp_path, monkeypatch, capsys):
    """MinIO, Ceph or R2 without AWS_ENDPOINT_URL: the endpoint rides in the URI's query
    (pyarrow's ``endpoint_override``), through the sweep's trials and every later command."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the local Ray this sweep starts inherits no endpoint
    host = s3.endpoint.removeprefix("http://")
    query = f"?endpoint_override={host}&scheme=http"
    space = write_space(tmp_path / "space.yaml", multinode_recipe, num_samples=1)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(space), "--storage", f"s3://{BUCKET}/endpoint{query}", "--name", "e", "--quiet"]) == 0
    run = f"s3://{BUCKET}/endpoint/e{query}"
    assert f"Leaderboard of {run}" in capsys.readouterr().out
    assert f"{BUCKET}/endpoint/e/search_space.yaml" in s3.files("endpoint", "e")
    assert any("/checkpoint_" in f for f in s3.files("endpoint", "e"))  # written by the trial's process
    assert main(["leaderboard", run]) == 0 and main(["export", run, "-o", "best.yaml"]) == 0
    assert main(["sweep", "--resume", run, "--num-samples", "2", "--quiet"]) == 0
    board = read_leaderboard(io.StringIO(read_text(run, "leaderboard_trials.csv")))
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()
