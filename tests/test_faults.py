"""Faults a cluster has every day, each on a real local Ray with the tiny model: a trial's
process killed, a DDP worker killed, the run folder read-only, Ctrl-C, a trial out of memory.
Each sweep runs as ``python -m xling_ray.cli sweep`` in its own process group (its own Ray),
so that the test can signal it, kill one of its processes, and check what it left behind."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import assert_figures_of_an_uninterrupted_run
from xling_ray.cli import main
from xling_ray.leaderboard.table import read_leaderboard

pytestmark = pytest.mark.slow  # every test here starts Ray

ROUNDS, EVERY = 6, 2  # 96 pairs / batch 16: six steps, an evaluation and a checkpoint every two
EPOCHS = [1 / 3, 2 / 3, 1.0]


@pytest.fixture(scope="module")
def fault_recipe(tiny_recipe):
    # Frozen word embeddings: the tiny model's 250k-token table stays out of the checkpoints
    # (a few hundred KB each), so a checkpoint is quick to write and the disk tests stay small.
    return tiny_recipe.with_updates({
        "data.tasks": ["pawsx"], "data.train_size": 96, "train.epochs": 1, "train.eval_every_steps": EVERY,
        "model.freeze_word_embeddings": True,
    })


def write_space(path: Path, recipe, **sweep) -> Path:
    path.write_text(yaml.safe_dump({"recipe": recipe.model_dump(mode="json"), "search": {},
                                    "sweep": {"num_samples": 1, "seeds": 1, "max_concurrent_trials": 1, **sweep}}))
    return path


class Sweep:
    """``xling-ray sweep`` in a process group of its own, its output in files, and every
    process it started (its Ray) remembered while it runs."""

    def __init__(self, tmp: Path, args: list[str]):
        self.out, self.err = tmp / "stdout.txt", tmp / "stderr.txt"
        self.proc = subprocess.Popen([sys.executable, "-m", "xling_ray.cli", "sweep", *args, "--quiet"],
                                     start_new_session=True, stdout=self.out.open("w"), stderr=self.err.open("w"),
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.started: set[tuple[int, float]] = set()

    def poll(self) -> bool:
        """Still running? Notes its descendant processes on the way."""
        try:
            self.started |= {(p.pid, p.create_time()) for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.Error:
            pass
        return self.proc.poll() is None

    def wait_for(self, condition, timeout: float = 240):
        deadline = time.time() + timeout
        while time.time() < deadline and self.poll():
            found = condition()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"gave up waiting (exit {self.proc.returncode}): {self.err.read_text()[-2000:]}")

    def wait(self, timeout: float = 300) -> int:
        deadline = time.time() + timeout
        while self.poll() and time.time() < deadline:
            time.sleep(0.1)
        return self.proc.wait(timeout=1)

    def alive(self) -> list[psutil.Process]:
        """The processes it started that still run."""
        out = []
        for pid, created in self.started:
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for p in self.alive():
            p.kill()


@pytest.fixture
def sweeps():
    started: list[Sweep] = []
    yield lambda tmp, args: started.append(Sweep(tmp, args)) or started[-1]
    for s in started:
        s.kill()


def trial_dirs(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("run_trial*") if p.is_dir()) if run.exists() else []


def result_lines(trial_dir: Path) -> list[dict]:
    f = trial_dir / "result.json"
    try:
        return [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    except (OSError, json.JSONDecodeError):
        return []


def first_report(run: Path, checkpointed: bool = True):
    """The first trial folder with a reported (and checkpointed) evaluation, and that report.
    (A trial of several workers keeps its checkpoints in its Ray Train run, ``RUN/train/``.)"""
    for d in trial_dirs(run):
        lines = result_lines(d)
        if lines and (not checkpointed or list(d.glob("checkpoint_*"))):
            return d, lines[0]
    return None


def assert_each_evaluation_once(run: Path, trials: int) -> None:
    """Every trial finished, and reported each of its evaluations exactly once: nothing lost,
    nothing repeated (a trial restarted from scratch would report 1/3 twice)."""
    dirs = trial_dirs(run)
    assert len(dirs) == trials
    for d in dirs:
        assert [r["epoch"] for r in result_lines(d)] == pytest.approx(EPOCHS), d.name
    board = read_leaderboard(run / "leaderboard_trials.csv")
    assert len(board) == trials and (board["status"] == "TERMINATED").all()


# ---------------------------------------------------------------- a trial's process killed


def test_fault_a_killed_trial_process_is_retried_from_its_checkpoint_and_ends_as_if_never_killed(
        fault_recipe, tmp_path, sweeps):
    space = write_space(tmp_path / "space.yaml", fault_recipe, max_failures=1)
    run = tmp_path / "runs" / "killed"
    sweep = sweeps(tmp_path, [str(space), "--storage", str(tmp_path / "runs"), "--name", "killed"])
    trial_dir, first = sweep.wait_for(lambda: first_report(run))
    victim = first["pid"]
    assert victim in {pid for pid, _ in sweep.started}, "the trial's process is one this sweep started"
    os.kill(victim, signal.SIGKILL)  # as the OOM killer or a lost spot instance would
    assert sweep.wait() == 0, sweep.err.read_text()[-3000:]

    lines = result_lines(trial_dir)
    # Retried from its checkpoint, not from scratch: each evaluation reported once, the ones
    # after the kill by a new process.
    assert [r["epoch"] for r in lines] == pytest.approx(EPOCHS)
    assert lines[0]["pid"] == victim and {r["pid"] for r in lines[1:]} == {lines[-1]["pid"]} != {victim}
    out = sweep.out.read_text()
    assert f"trial {first['trial_id']} failed: " in out, out
    assert "; retrying from its last checkpoint (checkpoint_000000), retry 1 of 1" in out, out
    # The leaderboard counts it once, finished.
    board = read_leaderboard(run / "leaderboard_trials.csv")
    assert len(board) == 1 and board.loc[0, "status"] == "TERMINATED"

    # Its final figures are those of a run never interrupted (same recipe and seed, on the CPU, one thread).
    assert_figures_of_an_uninterrupted_run(lines[-1], fault_recipe)


# ---------------------------------------------------------------- Ctrl-C


def test_fault_ctrl_c_stops_the_sweep_in_seconds_says_how_to_resume_and_resume_finishes_it(
        fault_recipe, tmp_path, sweeps):
    space = write_space(tmp_path / "space.yaml", fault_recipe, seeds=2)
    run = tmp_path / "runs" / "ctrlc"
    sweep = sweeps(tmp_path, [str(space), "--storage", str(tmp_path / "runs"), "--name", "ctrlc"])
    sweep.wait_for(lambda: first_report(run))
    sent = time.time()
    sweep.proc.send_signal(signal.SIGINT)
    assert sweep.wait(timeout=60) == 130
    took = time.time() - sent
    assert took < 20, f"took {took:.1f} s to stop"
    err = sweep.err.read_text()
    assert err.strip().splitlines()[-1] == f"xling-ray: interrupted; continue with `xling-ray sweep --resume {run}`"
    assert "Traceback" not in err
    assert "Leaderboard" not in sweep.out.read_text()  # an interrupted sweep prints no leaderboard as if it had ended
    time.sleep(1)
    assert not sweep.alive(), [p.cmdline()[:2] for p in sweep.alive()]  # its Ray is gone

    assert main(["sweep", "--resume", str(run), "--quiet"]) == 0
    board = read_leaderboard(run / "leaderboard_trials.csv")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()
    for d in trial_dirs(run):
        # Continued from its checkpoint, every evaluation there. An evaluation that reached the
        # driver while it was stopping (after Tune's last snapshot) is reported once more.
        epochs = [r["epoch"] for r in result_lines(d)]
        assert sorted(set(epochs)) == pytest.approx(EPOCHS) and epochs.count(EPOCHS[0]) == 1, (d.name, epochs)
        assert len(epochs) <= len(EPOCHS) + 1, (d.name, epochs)


# ---------------------------------------------------------------- the run folder cannot be written


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MB tmpfs of the test's own, to turn read-only and back."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True)


def test_fault_a_read_only_run_folder_stops_the_sweep_with_one_line_and_resume_loses_nothing(
        fault_recipe, tmp_path, small_disk, sweeps):
    space = write_space(tmp_path / "space.yaml", fault_recipe, seeds=2)
    run = small_disk / "ro"
    sweep = sweeps(tmp_path, [str(space), "--storage", str(small_disk), "--name", "ro"])
    sweep.wait_for(lambda: first_report(run))
    remount(small_disk, "ro")
    try:
        assert sweep.wait() == 1
    finally:
        remount(small_disk, "rw")
    err = sweep.err.read_text().strip().splitlines()
    assert err[-1].startswith(f"xling-ray: error: cannot write to the run folder {run} (OSError: "), err[-1]
    assert "Read-only file system" in err[-1] and f"xling-ray sweep --resume {run}`" in err[-1]
    assert not any("Traceback" in l for l in err), "\n".join(err)

    assert main(["sweep", "--resume", str(run), "--quiet"]) == 0
    assert_each_evaluation_once(run, trials=2)


# ---------------------------------------------------------------- a DDP worker killed


def train_workers(sweep: Sweep) -> list[psutil.Process]:
    found = []
    for p in sweep.alive():
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_fault_a_killed_ddp_worker_fails_its_trial_naming_the_worker_and_the_sweep_goes_on(
        fault_recipe, tmp_path, sweeps):
    recipe = fault_recipe.with_updates({"scaling.num_workers": 2, "scaling.cpus_per_worker": 1, "scaling.use_gpu": False,
                                        "train.epochs": 3})
    space = write_space(tmp_path / "space.yaml", recipe, seeds=2, max_failures=0)
    run = tmp_path / "runs" / "ddp"
    sweep = sweeps(tmp_path, [str(space), "--storage", str(tmp_path / "runs"), "--name", "ddp"])
    sweep.wait_for(lambda: first_report(run, checkpointed=False))  # the first trial trains on both workers
    workers = train_workers(sweep)
    assert len(workers) == 2, [p.cmdline() for p in sweep.alive()]
    victim = workers[-1]
    victim.kill()
    assert sweep.wait() == 0, sweep.err.read_text()[-3000:]
    board = read_leaderboard(run / "leaderboard_trials.csv").set_index("trial_id")
    assert len(board) == 2
    first = board.index[board["seed"] == 0][0]
    lost = board.loc[first]
    assert lost["status"] == "ERROR", lost
    named = re.search(rf"WorkerFailed: Ray Train worker [01] of 2 lost \(pid {victim.pid}, node [0-9.]+\): its process died",
                      lost["error"])
    assert named, lost["error"]
    assert (board.drop(first)["status"] == "TERMINATED").all()  # the sweep went on
    assert named[0] in sweep.out.read_text()  # in the printed leaderboard


# ---------------------------------------------------------------- a trial out of memory


def test_fault_a_trial_out_of_memory_is_failed_with_the_reason_and_the_others_finish(fault_recipe, tmp_path, sweeps):
    # scaling.memory_limit_gb: 1.5 GiB above what each trial's process maps when it starts. One
    # configuration's feed-forward layers (64 x 4M floats, 1 GiB a matrix) cannot fit in it.
    recipe = fault_recipe.with_updates({"scaling.memory_limit_gb": 1.5, "train.eval_every_steps": None})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "recipe": recipe.model_dump(mode="json"),
        "search": {"model.config_overrides.intermediate_size": {"choice": [128, 4_000_000]}},
        "sweep": {"num_samples": 2, "seeds": 1, "max_concurrent_trials": 1, "max_failures": 0,
                  "points_to_evaluate": [{"model.config_overrides.intermediate_size": 4_000_000},
                                         {"model.config_overrides.intermediate_size": 128}]}}))
    sweep = sweeps(tmp_path, [str(space), "--storage", str(tmp_path / "runs"), "--name", "oom"])
    assert sweep.wait() == 0, sweep.err.read_text()[-2000:]
    trials = read_leaderboard(tmp_path / "runs" / "oom" / "leaderboard_trials.csv").set_index(
        "model.config_overrides.intermediate_size")
    big, small = trials.loc[4_000_000], trials.loc[128]
    assert big["status"] == "ERROR" and small["status"] == "TERMINATED"
    assert big["error"].startswith("xling_ray.train.memory.TrialOutOfMemory: out of memory: the trial needed more "
                                   "than scaling.memory_limit_gb=1.5 GiB"), big["error"]
    assert "can't allocate memory" in big["error"]
