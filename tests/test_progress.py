"""The sweep's live progress line, driven through Tune's callback hooks with stand-in trials."""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field

import pytest
from ray.tune import Callback

from xling_ray.tune.progress import SweepProgress, format_duration


@dataclass
class FakeTrial:
    trial_id: str
    status: str = "PENDING"
    last_result: dict = field(default_factory=dict)
    error_file: str | None = None
    config: dict | None = None  # Tune's: the searched settings and the seed index

    def __post_init__(self):
        if self.config is None:  # a configuration of its own, one seed
            self.config = {"losses.xite.lam": float(sum(map(ord, self.trial_id)))}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(progress: SweepProgress, clock: Clock) -> list[FakeTrial]:
    """Four trials, two at a time: a finishes (100 s), b fails, c runs, d waits."""
    trials = [FakeTrial("a"), FakeTrial("b")]
    progress.setup(num_samples=4, total_num_samples=4)
    for t in trials:
        t.status = "RUNNING"
        progress.on_trial_start(0, trials, t)
    clock.now += 50
    progress.on_trial_result(1, trials, trials[0], {"gap": 7.5, "epoch": 1})
    progress.on_trial_result(1, trials, trials[1], {"gap": float("nan")})
    clock.now += 50
    trials[0].status, trials[0].last_result = "TERMINATED", {"gap": 6.0, "time_total_s": 100.0}
    progress.on_trial_complete(2, trials, trials[0])
    trials[1].status = "ERROR"
    progress.on_trial_error(2, trials, trials[1])
    trials += [FakeTrial("c", "RUNNING"), FakeTrial("d")]
    progress.on_trial_start(3, trials, trials[2])
    clock.now += 30
    progress.on_step_end(4, trials)
    return trials


def test_a_terminal_gets_a_redrawn_line_with_counts_best_elapsed_and_eta():
    clock, out = Clock(), Terminal()
    progress = SweepProgress("gap", "min", stream=out, clock=clock)
    trials = _run(progress, clock)
    text = out.getvalue()
    frames = [f.removesuffix("\x1b[K") for f in text.split("\r") if f]
    assert "\n" not in text  # redrawn in place
    assert frames[0] == "sweep 0/4 done | 1 running | 0 failed | best gap - | 0:00 elapsed | ETA ?"
    # After the first trial: best 6.00 (its final result), 100 s per trial, c has run 30 s,
    # d has not started: (70 + 100) / 1 running trial.
    assert frames[-1] == "sweep 1/4 done | 1 running | 1 failed | best gap 6.00 (config a) | 2:10 elapsed | ETA 2:50"
    assert progress.eta(trials) == pytest.approx(170.0)
    progress.on_experiment_end(trials)
    assert out.getvalue().endswith("| 2:10 elapsed | ETA 2:50\x1b[K\n")


def test_redraws_are_at_most_once_a_second_but_finished_trials_always_show():
    clock, out = Clock(), Terminal()
    progress = SweepProgress(stream=out, clock=clock)
    trials = [FakeTrial("a", "RUNNING")]
    progress.setup(num_samples=2)
    for _ in range(5):
        progress.on_step_end(0, trials)
    assert out.getvalue().count("\r") == 1
    trials[0].status = "TERMINATED"
    progress.on_trial_complete(0, trials, trials[0])
    assert out.getvalue().count("\r") == 2


def test_not_a_terminal_prints_a_line_per_finished_or_failed_trial_and_the_final_line():
    clock, out = Clock(), io.StringIO()  # StringIO.isatty() is False, like a CI log
    progress = SweepProgress("gap", "min", stream=out, clock=clock)
    trials = _run(progress, clock)
    assert out.getvalue().splitlines() == [
        "[1/4 done, 0 failed] trial a finished in 1:40: gap 6.00",
        "[1/4 done, 1 failed] trial b failed: no error message recorded",
    ]
    progress.on_experiment_end(trials)
    assert out.getvalue().splitlines()[-1] == (
        "sweep 1/4 done | 1 running | 1 failed | best gap 6.00 (config a) | 2:10 elapsed | ETA 2:50")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_quiet_prints_the_final_line_only():
    clock, out = Clock(), io.StringIO()
    progress = SweepProgress("gap", "min", stream=out, clock=clock, per_trial=False)
    trials = _run(progress, clock)
    assert out.getvalue() == ""
    progress.on_experiment_end(trials)
    assert out.getvalue() == "sweep 1/4 done | 1 running | 1 failed | best gap 6.00 (config a) | 2:10 elapsed | ETA 2:50\n"


def test_a_trials_line_gives_its_scores_collapse_and_the_last_line_of_its_traceback(tmp_path):
    clock, out = Clock(), io.StringIO()
    progress = SweepProgress("gap", "min", stream=out, clock=clock)
    progress.setup(num_samples=3)
    done = FakeTrial("ok", "TERMINATED", {"gap": 4.214, "acc_en": 55.2, "acc_target": 51.0, "collapsed": 1.0})
    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\n  File \"loop.py\", line 3\nValueError: loss is nan at step 12\n\n")
    failed = FakeTrial("bad", "ERROR", error_file=str(error))
    progress.on_trial_complete(0, [done], done)
    progress.on_trial_error(0, [done, failed], failed)
    lines = out.getvalue().splitlines()
    assert lines[0] == ("[1/3 done, 0 failed] trial ok finished: gap 4.21, acc_en 55.20, acc_target 51.00, "
                        "collapsed (one class for nearly every English example; ranked last)")
    assert lines[1] == f"[1/3 done, 1 failed] trial bad failed: ValueError: loss is nan at step 12 ({error})"


def test_mode_max_and_a_resumed_sweeps_earlier_trials_count():
    clock, out = Clock(), io.StringIO()
    progress = SweepProgress("acc_target", "max", stream=out, clock=clock)
    progress.setup(num_samples=2)
    earlier = [FakeTrial("x", "TERMINATED", {"acc_target": 40.0, "time_total_s": 60.0}),
               FakeTrial("y", "TERMINATED", {"acc_target": 55.0, "time_total_s": 60.0})]
    progress.on_experiment_end(earlier)
    assert out.getvalue().startswith("sweep 2/2 done | 0 running | 0 failed | best acc_target 55.00 (config y)")
    with pytest.raises(ValueError, match="mode"):
        SweepProgress(mode="lowest")


def test_a_collapsed_trial_is_never_the_best_so_far():
    clock, out = Clock(), io.StringIO()
    progress = SweepProgress("gap", "min", stream=out, clock=clock)
    progress.setup(num_samples=2)
    trials = [FakeTrial("dead", "TERMINATED", {"gap": 0.1, "collapsed": 1.0, "time_total_s": 60.0}),
              FakeTrial("learns", "TERMINATED", {"gap": 5.0, "collapsed": 0.0, "time_total_s": 60.0})]
    progress.on_experiment_end(trials)
    assert "best gap 5.00 (config learns)" in out.getvalue()


def test_it_is_a_tune_callback_that_pickles_without_its_stream():
    progress = SweepProgress(stream=Terminal())
    assert isinstance(progress, Callback)
    again = pickle.loads(pickle.dumps(progress))  # Tune saves callbacks with the experiment
    assert again._stream is None and again.metric == "gap"


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.6, 75, 3725)] == ["0:00", "1:00", "1:15", "1:02:05"]


def _config(name: str, lam: float, seeds: list[tuple[float, float, float]], status: str = "TERMINATED") -> list[FakeTrial]:
    """One configuration's trials: (gap, acc_en, collapsed) per seed, seed index in the config."""
    return [FakeTrial(f"{name}_{i}", status, {"gap": g, "acc_en": en, "acc_target": 50.0, "collapsed": c,
                                              "time_total_s": 60.0},
                      config={"losses.xite.lam": lam, "__trial_index__": i})
            for i, (g, en, c) in enumerate(seeds)]


def test_the_best_is_the_leaderboards_rank_1_per_configuration_mean_and_above_the_floor():
    """The live best is what the leaderboard ranks first from the same trials: a configuration's
    mean over its seeds (not one lucky seed), a running configuration not yet, one below the
    English floor after one above it, a collapsed one last."""
    from xling_ray.leaderboard.table import group_configs, live_trials, rank_one
    from xling_ray.tune.space import SearchSpace

    space = SearchSpace.model_validate({
        "search": {"losses.xite.lam": {"uniform": [0.0, 1.0]}},
        "sweep": {"seeds": 2, "constraint": {"metric": "acc_en", "baseline": 55.0, "delta": 2.0}}})
    trials = (_config("lucky", 0.1, [(1.0, 60.0, 0.0), (9.0, 60.0, 0.0)])  # best seed 1.0, mean 5.0
              + _config("steady", 0.2, [(4.0, 60.0, 0.0), (4.4, 60.0, 0.0)])  # mean 4.2: rank 1
              + _config("below", 0.3, [(0.9, 50.3, 0.0), (0.8, 50.3, 0.0)])  # English 50.3 < floor 53
              + _config("dead", 0.4, [(0.0, 33.0, 1.0), (0.1, 33.0, 0.0)])
              + _config("running", 0.5, [(0.5, 60.0, 0.0)], status="RUNNING"))
    clock, out = Clock(), io.StringIO()
    progress = SweepProgress("gap", "min", stream=out, clock=clock, space=space)
    progress.setup(num_samples=10)
    progress.on_experiment_end(trials)
    assert "best gap 4.20 (config steady_0, 2 seeds) |" in out.getvalue()
    board = group_configs(live_trials(trials, space), space.sweep.metrics, space.sweep.modes, space.sweep.constraint)
    assert list(board["config_id"]) == ["steady_0", "lucky_0", "below_0", "dead_0", "running_0"]
    assert rank_one(board)["config_id"] == "steady_0"
    # Nothing above the floor: rank 1 is below it, and the line says so.
    only_below = _config("below", 0.3, [(0.9, 50.3, 0.0), (0.8, 50.3, 0.0)])
    progress.on_experiment_end(only_below)
    assert out.getvalue().splitlines()[-1].split(" | ")[3] == "best gap 0.85 (config below_0, 2 seeds, below the floor)"


def test_a_configuration_with_a_seed_still_running_is_not_the_best_yet():
    clock, out = Clock(), io.StringIO()
    progress = SweepProgress("gap", "min", stream=out, clock=clock)
    progress.setup(num_samples=4)
    trials = _config("half", 0.1, [(1.0, 60.0, 0.0), (1.2, 60.0, 0.0)])
    trials[1].status = "RUNNING"
    progress.on_trial_complete(0, trials, trials[0])
    assert progress.best is None
    progress.on_trial_complete(1, trials, trials[1])  # Tune calls the hook before it sets TERMINATED
    assert progress.best == (pytest.approx(1.1), "half_0", 2, True)
