"""Live progress of a sweep in the terminal: a Ray Tune callback.

On a terminal, one status line is redrawn in place (at most once a second):

    sweep 3/9 done | 2 running | 1 failed | best gap 4.21 (config 1a2b_00002, 3 seeds) | 12:03 elapsed | ETA 24:10

Not on a terminal (CI, a log file, ``ray job logs``), one line per trial as it finishes
or fails, and the status line when the sweep ends, so logs stay readable:

    [3/9 done, 0 failed] trial 1a2b_00002 finished in 3:47: gap 4.21, acc_en 55.20, acc_target 51.00
    [3/9 done, 1 failed] trial 1a2b_00003 failed: ValueError: loss is nan at step 12 (.../error.txt)

With early stopping (``sweep.scheduler: asha``) the line also counts the configurations stopped
early and the seeds paused while they wait for their configuration's other seeds at a rung
(``2 stopped early | 1 waiting``), and a stopped trial's line in a log says where its
configuration was stopped:

    [4/9 done, 0 failed] trial 1a2b_00004 stopped early at 1000 examples (config 1a2b_00003, mean gap 6.10 of 3 seeds there)

The best is the leaderboard's rank 1, computed by the same function from the trials so far
(:func:`xling_ray.leaderboard.table.group_configs`, :func:`~xling_ray.leaderboard.table.rank_one`):
a configuration's mean over its seeds once all have finished, collapsed configurations last,
those below the sweep's English floor after the feasible ones ("below the floor" when nothing
is above it). The counts come from the trials' own statuses (so a resumed sweep starts from what it already has); the estimate is

    ETA = (sum over running trials of max(0, T - age) + T * trials not started) / max(1, running)

with ``T`` the mean duration (``time_total_s``) of the trials finished so far, ``age`` the
time a running trial has run, and trials not started = ``num_samples`` minus the trials
created so far (unknown, so no ETA, before any trial finishes).
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

_DONE, _FAILED, _RUNNING = "TERMINATED", "ERROR", "RUNNING"


def format_duration(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class SweepProgress(Callback):
    """Running / done / failed counts, the best ``metric`` so far, elapsed time and an
    estimate of the time left (see the module docstring).

    - ``metric``, ``mode``: the value to track (``min`` or ``max``);
    - ``live``: redraw a status line; ``None`` (default): when stdout is a terminal,
      decided when the sweep starts;
    - ``per_trial``: when not live, a line per finished or failed trial (``False``: only
      the final line);
    - ``space``: the sweep's search space (its constraint, plain baseline and seed base), so
      that the best is ranked as the leaderboard ranks it; ``None``: no constraint;
    - ``early_stopping``: the sweep's :class:`~xling_ray.tune.early_stopping.SeedGroupASHA`, which
      says what it stopped; ``None``: no early stopping;
    - ``stream``, ``clock``: where to write and how to tell time (tests pass their own).
    """

    per_trial = True  # a callback pickled with an earlier version's sweep (resumed) lacks the attribute
    space = None
    early_stopping = None

    #: Shown after the tracked metric in a trial's line, when the trial reports them.
    ALSO_SHOWN = ("gap", "acc_en", "acc_target")

    def __init__(self, metric: str = "gap", mode: str = "min", live: bool | None = None,
                 stream: TextIO | None = None, interval_s: float = 1.0, clock=time.monotonic,
                 per_trial: bool = True, space=None, early_stopping=None):
        if mode not in ("min", "max"):
            raise ValueError(f"SweepProgress: mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.mode, self.interval_s, self.clock = metric, mode, interval_s, clock
        self.per_trial = per_trial
        self.space = space
        self.early_stopping = early_stopping
        self._live, self._stream = live, stream
        self.total: int | None = None
        #: (mean of ``metric``, configuration id, seeds, feasible) of the leaderboard's rank 1.
        self.best: tuple[float, str, int, bool] | None = None
        self._start = self._last_draw = None
        self._started_at: dict[str, float] = {}
        self._drawn = False

    # A Tuner pickles its callbacks with the experiment (to resume): never the stream.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"] = None
        return state

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    @property
    def live(self) -> bool:
        if self._live is None:
            isatty = getattr(self.stream, "isatty", None)
            return bool(isatty and isatty())
        return self._live

    # ---------------------------------------------------------------- Tune's hooks

    def setup(self, stop=None, num_samples: int | None = None, total_num_samples: int | None = None, **info):
        total = total_num_samples or num_samples
        self.total = total if total and total > 0 else None
        self._start = self.clock()

    def on_trial_start(self, iteration: int, trials: list, trial, **info):
        self._started_at[trial.trial_id] = self.clock()
        self._maybe_draw(trials)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        self._maybe_draw(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        self._update_best(trials, trial, _DONE)
        stopped = self._stopped_config(trial)
        if stopped is not None:
            config_id, where = stopped
            value = where.get("value")
            shown = f"{value:.2f}" if isinstance(value, (int, float)) and not math.isnan(value) else "n/a"
            self._log(trials, trial, _DONE, f"stopped early at {where['rung']} examples (config {config_id}, mean "
                                            f"{where.get('metric', self.metric)} {shown} of {where.get('seeds', 1)} "
                                            f"seed(s) there)")
        else:
            self._log(trials, trial, _DONE, f"finished{self._took(trial)}: {self._scores(trial.last_result or {})}")
        self._maybe_draw(trials, force=True)

    def _stopped(self) -> dict[str, dict]:
        return self.early_stopping.stopped() if self.early_stopping is not None else {}

    def _stopped_config(self, trial) -> tuple[str, dict] | None:
        """``(config id, where it was stopped)`` when early stopping stopped ``trial``'s configuration."""
        if self.early_stopping is None:
            return None
        config_id = self.early_stopping.config_of(trial.trial_id)
        where = self._stopped().get(config_id) if config_id is not None else None
        if where is None:
            return None
        # Named as the leaderboard names it: the first of its trial ids.
        return min(where.get("trial_ids") or [config_id]), where

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        self._update_best(trials, trial, _FAILED)
        self._log(trials, trial, _FAILED, f"failed: {error_summary(trial)}")
        self._maybe_draw(trials, force=True)

    def on_step_end(self, iteration: int, trials: list, **info):
        self._maybe_draw(trials)

    def on_experiment_end(self, trials: list, **info):
        self._update_best(trials)  # a resumed sweep's earlier trials count too
        line = self.status_line(trials)
        if self.live and self._drawn:
            self.stream.write(f"\r{line}\x1b[K\n")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()

    # ---------------------------------------------------------------- a trial's line (logs)

    def _log(self, trials: list, trial, status: str, text: str) -> None:
        if self.live or not self.per_trial:
            return
        # Tune calls the hook before it sets the trial's new status: count it as ``status``.
        statuses = [status if t.trial_id == trial.trial_id else t.status for t in trials]
        if trial.trial_id not in {t.trial_id for t in trials}:
            statuses.append(status)
        of = f"/{self.total}" if self.total else ""
        self.stream.write(f"[{statuses.count(_DONE)}{of} done, {statuses.count(_FAILED)} failed] "
                          f"trial {trial.trial_id} {text}\n")
        self.stream.flush()

    def _took(self, trial) -> str:
        started = self._started_at.get(trial.trial_id)
        return f" in {format_duration(self.clock() - started)}" if started is not None else ""

    def _scores(self, result: dict) -> str:
        shown = [self.metric] + [k for k in self.ALSO_SHOWN if k != self.metric]
        parts = [f"{k} {result[k]:.2f}" for k in shown if isinstance(result.get(k), (int, float))]
        if result.get("collapsed") == 1.0:
            parts.append("collapsed (one class for nearly every English example; ranked last)")
        return ", ".join(parts) or "no metrics reported"

    # ---------------------------------------------------------------- the line

    def _update_best(self, trials: list, trial=None, status: str | None = None) -> None:
        """The leaderboard's rank 1 over ``trials`` (``trial`` counted as ``status``: Tune calls
        the hook before it sets it); ``None`` until a configuration has finished all its seeds
        and learned."""
        from xling_ray.leaderboard.table import group_configs, live_trials, rank_one

        trials = list(trials) + ([trial] if trial is not None and trial not in trials else [])
        if not trials:
            return
        space = self.space
        sweep = space.sweep if space is not None else None
        metrics, modes = (sweep.metrics, sweep.modes) if sweep is not None else ((self.metric,), (self.mode,))
        table = live_trials(trials, space, lambda t: status if trial is not None and t is trial else t.status)
        configs = group_configs(table, metrics, modes, sweep.constraint if sweep else None,
                                space.baseline_point if space is not None else None, self._stopped())
        first = rank_one(configs, metrics[:1])
        if first is None or _missing(first.get(self.metric)):
            self.best = None
            return
        self.best = (float(first[self.metric]), str(first["config_id"]), int(first["seeds"]),
                     bool(first.get("feasible", True)))

    def _maybe_draw(self, trials: list, force: bool = False) -> None:
        if not self.live:
            return
        now = self.clock()
        if not force and self._last_draw is not None and now - self._last_draw < self.interval_s:
            return
        self._last_draw = now
        self.stream.write(f"\r{self.status_line(trials)}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def status_line(self, trials: list) -> str:
        now = self.clock()
        start = self._start if self._start is not None else now
        statuses = [t.status for t in trials]
        done, failed, running = statuses.count(_DONE), statuses.count(_FAILED), statuses.count(_RUNNING)
        of = f"/{self.total}" if self.total else ""
        parts = [f"sweep {done}{of} done", f"{running} running", f"{failed} failed"]
        if self.early_stopping is not None:
            parts.append(f"{len(self._stopped())} stopped early")
            waiting = statuses.count("PAUSED")
            if waiting:
                parts.append(f"{waiting} waiting")  # seeds paused at a rung until their configuration's others reach it
        if self.best is not None:
            value, config_id, seeds, feasible = self.best
            about = [f"config {config_id}"] + ([f"{seeds} seeds"] if seeds > 1 else []) + ([] if feasible else ["below the floor"])
            parts.append(f"best {self.metric} {value:.2f} ({', '.join(about)})")
        else:
            parts.append(f"best {self.metric} -")
        parts.append(f"{format_duration(now - start)} elapsed")
        eta = self.eta(trials, now)
        parts.append("ETA " + (format_duration(eta) if eta is not None else "?"))
        return " | ".join(parts)

    def eta(self, trials: list, now: float | None = None) -> float | None:
        """Seconds left (module docstring); ``None`` before a trial has finished or
        when the number of trials is unknown."""
        now = self.clock() if now is None else now
        durations = [float((t.last_result or {}).get("time_total_s", math.nan)) for t in trials if t.status == _DONE]
        durations = [d for d in durations if not math.isnan(d)]
        if not durations or self.total is None:
            return None
        mean = sum(durations) / len(durations)
        running = [t for t in trials if t.status == _RUNNING]
        not_started = max(0, self.total - len(trials)) + sum(1 for t in trials if t.status in ("PENDING", "PAUSED"))
        left = sum(max(0.0, mean - (now - self._started_at.get(t.trial_id, now))) for t in running)
        return (left + mean * not_started) / max(1, len(running))


def _missing(value) -> bool:
    return not isinstance(value, (int, float)) or math.isnan(value)


def error_summary(trial) -> str:
    """The last line of a failed trial's traceback (``ExceptionType: message``) and where
    the whole of it is; Tune writes it to the trial's ``error.txt``."""
    path = getattr(trial, "error_file", None)  # Tune's staging copy, on the driver
    try:
        lines = [l.strip() for l in open(path, encoding="utf-8", errors="replace")] if path else []
    except OSError:
        lines = []
    last = next((l for l in reversed(lines) if l), None)
    if last is None:
        return "no error message recorded"
    stored = getattr(trial, "path", None)  # the trial's folder in the run's storage, where it is kept
    return f"{last[:300]} ({stored.rstrip('/') + '/' + os.path.basename(path) if stored else path})"
