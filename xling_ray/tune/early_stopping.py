"""Early stopping that judges a configuration's seeds as one: ASHA over seed groups.

Tune's ASHA (``AsyncHyperBandScheduler``, Li et al., 2020) stops each trial on its own. A
sweep runs every configuration with several seeds (:class:`~xling_ray.tune.search.SeedGroups`)
and ranks the mean over them, so stopping one seed and keeping another would leave a
configuration with seeds of different lengths, and would judge it on one seed's luck.
:class:`SeedGroupASHA` judges the group instead:

* **The clock** is ``examples_seen``, the training examples a trial has stepped on (every
  report carries it; ``train.eval_every_examples`` adds evaluations during an epoch), so
  that a one-epoch trial has rungs. The rungs are ``grace_period * reduction_factor**k``
  training examples below ``max_t`` (:meth:`~xling_ray.tune.space.SchedulerConfig.milestones`,
  Tune's bracket with one bracket).
* **A seed reaches a rung** as Tune's ASHA has a trial reach one: at a report, the highest rung
  at or below its ``examples_seen`` that it has not reached before; its metric there is
  recorded.
* **Late seeds wait.** A seed that reaches a rung before the other seeds of its configuration
  is paused there (Tune's ``PAUSE``; it resumes from the checkpoint of that evaluation) until
  every seed has reached the rung; a seed that failed for good (``ERROR``) or ended is not
  waited for. Then the configuration's value at the rung is

      value(config, rung) = mean over its seeds s of metric(s, rung)

  and it is given to one Tune ``AsyncHyperBandScheduler`` as one trial's result at that rung:
  ASHA stops it when it falls outside the best ``1 / reduction_factor`` of the values recorded
  at that rung so far (its percentile cutoff). The decision is the whole configuration's:
  STOP stops every seed (the waiting ones through Tune's ``stop_trial``), CONTINUE resumes the
  waiting ones before any new trial starts. Judging on the seeds present instead would let
  one lucky seed carry a poor configuration, or one unlucky seed sink a good one.
* **A collapsed seed sinks its configuration.** A model that predicts one class has a gap near 0,
  the best a gap can look, so judged on its mean gap a configuration whose seed collapsed would be
  kept and one that learns stopped. At a rung where a seed reports ``collapsed`` (one class for
  nearly every English example of a task, :func:`xling_ray.metrics.is_collapsed`), ASHA is given
  :data:`COLLAPSED_VALUE`, worse than any value of the metric, instead of the mean, as the
  leaderboard ranks collapsed models last and Optuna counts them infeasible. Configurations that
  all collapsed at a rung (early in training, before any has left the majority class) tie there,
  and ASHA stops none of them on it. Optuna is told a stopped collapsed configuration infeasible.
* **Once stopped, stopped**: any later report of a stopped configuration's seeds is STOP (a
  seed restarted from an earlier checkpoint on resume reaches the rung again).
* The plain baseline (``constraint.baseline: plain``) is judged like the others but never
  stopped: the floor is measured on it.
* With one seed per configuration every report goes to ASHA as it is: plain ASHA, the same
  decisions as Tune's ``ASHAScheduler`` on the same clock.

What was stopped is told to :class:`~xling_ray.tune.search.SeedGroups` (:meth:`stopped`), which
tells Optuna once, as pruned, when the configuration's last seed has ended; the leaderboard
(``stopped_at``), the progress line and MLflow read :meth:`stopped` too.

**Resume.** The scheduler's state (what each seed reached, the decisions, what was given to ASHA
in which order) is a JSON file in the run folder, :data:`STATE_FILE`, rewritten whenever it
changes. A resumed sweep reads it back (:meth:`restore`), gives ASHA the recorded values again in
the recorded order (so its cutoffs are the same) and returns the recorded decision for every rung
already decided: it makes the same decisions.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.repeater import TRIAL_INDEX

from xling_ray.tune.search import COLLAPSED  # a report's flag of a model that predicts one class

#: The scheduler's state in a run folder (JSON): what the leaderboard reads ``stopped_at`` from. In a
#: folder of its own: Tune copies the run folder's top-level ``.json`` and ``.pkl`` files to its staging
#: folder when a sweep resumes and uploads them back at every snapshot, which would put back an old state.
STATE_FILE = "early_stopping/state.json"
#: The clock: training examples stepped on, summed over tasks and workers (xling_ray.train.loop).
TIME_ATTR = "examples_seen"
#: What a configuration with a collapsed seed is worth at a rung, in the metric's worse direction: beyond
#: any gap or accuracy, and finite, because ASHA's cutoff interpolates between the recorded values (an
#: infinity there gives NaN, and NaN stops nothing).
COLLAPSED_VALUE = 1e6

_STATE_VERSION = 1


class _Group:
    """What ASHA sees of a configuration: a trial with the configuration's id (ASHA reads only
    ``trial_id``)."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _key(rung: float) -> str:
    """A rung as a JSON key: ``1000`` -> ``"1000"``, ``1500.0`` -> ``"1500"``."""
    return format(rung, "g") if not float(rung).is_integer() else str(int(rung))


def _known(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


class SeedGroupASHA(FIFOScheduler):
    """ASHA over seed groups (the module docstring).

    - ``metric``, ``mode``: what is judged (the sweep's first objective) and its direction;
      ``metrics``: what else is kept of each seed at a rung (the sweep's objectives; told to
      Optuna with a stopped configuration);
    - ``grace_period``, ``max_t`` (training examples), ``reduction_factor``: ASHA's, on the clock
      ``time_attr`` (``examples_seen``);
    - ``seeds``: trials per configuration;
    - ``groups``: the sweep's :class:`~xling_ray.tune.search.SeedGroups`, which says which
      configuration a trial belongs to and is told what was stopped; ``None`` (a sweep that
      searches nothing): trials of equal settings are one configuration;
    - ``run_dir``: the run folder (a path or a URI) whose :data:`STATE_FILE` keeps the state
      for a resumed sweep; ``None``: kept in memory only (:meth:`save` / :meth:`restore` still
      write and read a file).
    """

    _supports_buffered_results = False  # every report is judged: no results skipped in a buffer

    def __init__(self, metric: str, mode: str, grace_period: int, max_t: int, reduction_factor: float = 2,
                 seeds: int = 1, groups=None, run_dir: str | None = None, metrics: tuple[str, ...] = (),
                 time_attr: str = TIME_ATTR):
        if mode not in ("min", "max"):
            raise ValueError(f"SeedGroupASHA: mode must be 'min' or 'max', got {mode!r}")
        if not 0 < grace_period < max_t:
            raise ValueError(f"SeedGroupASHA: grace_period ({grace_period}) must be positive and below max_t ({max_t})")
        super().__init__()
        self._metric, self._mode, self._time_attr = metric, mode, time_attr
        self._metrics = tuple(dict.fromkeys((metric, *metrics)))
        self._grace, self._max_t, self._rf = grace_period, max_t, float(reduction_factor)
        self._seeds = int(seeds)
        self._groups = groups
        self._run_dir = None if run_dir is None else str(run_dir)
        from xling_ray.tune.space import SchedulerConfig

        self._milestones = SchedulerConfig(type="asha", reduction_factor=self._rf).milestones(grace_period, max_t)
        self._live: dict[str, Trial] = {}  # trial id -> Tune's trial (not saved: Tune adds them again on resume)
        self._clear()
        self._loaded = self._run_dir is None

    # ---------------------------------------------------------------- state

    def _clear(self) -> None:
        self._asha = AsyncHyperBandScheduler(time_attr=self._time_attr, metric=self._metric, mode=self._mode,
                                             max_t=self._max_t, grace_period=self._grace,
                                             reduction_factor=self._rf)
        self._in_asha: dict[str, _Group] = {}
        self._config_of: dict[str, str] = {}                              # trial id -> config id
        self._settings_of: dict[str, str] = {}                            # config id -> its settings (no groups)
        self._reached: dict[str, dict[str, dict[str, dict[str, float]]]] = {}  # config -> rung -> trial -> metrics
        self._decided: dict[str, dict[str, str]] = {}                     # config -> rung -> CONTINUE / STOP
        self._judged: list[dict[str, Any]] = []                           # what ASHA was given, in order
        self._stopped: dict[str, dict[str, Any]] = {}                     # config -> where it was stopped

    def state(self) -> dict[str, Any]:
        """The state as JSON-able data (the module docstring, "Resume")."""
        self._ensure_loaded()
        return {"version": _STATE_VERSION, "metric": self._metric, "mode": self._mode, "time_attr": self._time_attr,
                "grace_period": self._grace, "max_t": self._max_t, "reduction_factor": self._rf,
                "seeds": self._seeds, "milestones": self._milestones, "trials": self._config_of,
                "settings": self._settings_of, "reached": self._reached, "decided": self._decided,
                "judged": self._judged, "stopped": self._stopped}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take :meth:`state`'s data: ASHA is given the judged values again, in their order."""
        self._clear()
        self._config_of = dict(state.get("trials", {}))
        self._settings_of = dict(state.get("settings", {}))
        self._reached = {c: {r: {t: dict(v) for t, v in seeds.items()} for r, seeds in rungs.items()}
                         for c, rungs in state.get("reached", {}).items()}
        self._decided = {c: dict(d) for c, d in state.get("decided", {}).items()}
        self._stopped = {c: dict(s) for c, s in state.get("stopped", {}).items()}
        for entry in state.get("judged", []):
            self._give_asha(entry["config_id"], entry["rung"], entry["value"])
            self._judged.append(dict(entry))
        self._loaded = True

    def save(self, checkpoint_path: str) -> None:
        """Write :meth:`state` to the local file ``checkpoint_path`` (Tune's ``TrialScheduler.save``)."""
        with open(checkpoint_path, "w") as f:
            json.dump(self.state(), f, indent=1)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote (Tune's ``TrialScheduler.restore``)."""
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        text = read_state_text(self._run_dir)
        if text is not None:
            self.set_state(json.loads(text))

    def _persist(self) -> None:
        if self._run_dir is not None:
            write_state_text(self._run_dir, json.dumps(self.state(), indent=1))

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the scheduler with the Tuner when the sweep starts; a resumed sweep reads
        # the state from the run folder, where it is current.
        state = dict(self.__dict__)
        state["_live"] = {}
        if self._run_dir is not None:
            state["_loaded"] = False
        return state

    # ---------------------------------------------------------------- what was stopped

    def stopped(self) -> dict[str, dict[str, Any]]:
        """Config id -> ``{"rung", "metric", "value", "collapsed", "seeds", "per_seed", "values", "trial_ids"}``
        of each configuration stopped early: the rung (training examples), the judged metric, its mean
        over the seeds there, whether a seed had collapsed there, how many seeds were judged, each
        seed's value (in trial id order), the mean of each of ``metrics``, and the configuration's Tune
        trials."""
        self._ensure_loaded()
        return {c: dict(s) for c, s in self._stopped.items()}

    def config_of(self, trial_id: str) -> str | None:
        """The configuration (its id) of a trial this scheduler has seen."""
        self._ensure_loaded()
        return self._config_of.get(trial_id)

    def waiting(self, trial) -> bool:
        """Whether ``trial`` has reached a rung its configuration has not been judged at yet."""
        config = self._config_of.get(trial.trial_id)
        return config is not None and any(trial.trial_id in seeds and rung not in self._decided.get(config, {})
                                          for rung, seeds in self._reached.get(config, {}).items())

    # ---------------------------------------------------------------- Tune's hooks

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._ensure_loaded()
        self._live[trial.trial_id] = trial
        if trial.trial_id in self._config_of:
            return
        config = self._groups.config_id(trial.trial_id) if self._groups is not None else None
        if config is None:  # trials of equal settings, without a searcher that grouped them
            settings = repr(sorted((k, repr(v)) for k, v in (trial.config or {}).items() if k != TRIAL_INDEX))
            config = next((c for c, s in self._settings_of.items() if s == settings), trial.trial_id)
            self._settings_of.setdefault(config, settings)
        self._config_of[trial.trial_id] = config

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self._ensure_loaded()
        if trial.trial_id not in self._config_of:
            self.on_trial_add(tune_controller, trial)
        t, value = result.get(self._time_attr), result.get(self._metric)
        if t is None or value is None:
            return TrialScheduler.CONTINUE
        config = self._config_of[trial.trial_id]
        if config in self._stopped:
            return TrialScheduler.STOP
        if t >= self._max_t:
            return TrialScheduler.STOP  # ASHA's end of a trial (stop_last_trials)
        decision = self._reach(tune_controller, trial, t, result)
        if decision == TrialScheduler.STOP:
            return decision
        if any(trial.trial_id in seeds and rung not in self._decided.get(config, {}) and t >= float(rung)
               for rung, seeds in self._reached.get(config, {}).items()):
            return TrialScheduler.PAUSE  # it waits for the configuration's other seeds
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._ensure_loaded()
        if trial.trial_id not in self._config_of:
            self.on_trial_add(tune_controller, trial)
        t = (result or {}).get(self._time_attr)
        if t is not None and (result or {}).get(self._metric) is not None \
                and self._config_of[trial.trial_id] not in self._stopped:
            self._reach(tune_controller, trial, t, result)  # ASHA records a trial's last result too

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        pass

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        pass  # its configuration is judged without it once Tune has marked it ERROR (choose_trial_to_run)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """Judge configurations whose awaited seeds failed; then resume a waiting seed whose
        configuration was kept, before any new trial; else the first pending trial. A seed that
        waits for its configuration's judgement stays paused."""
        self._ensure_loaded()
        for config, rungs in list(self._reached.items()):
            for rung in list(rungs):
                if rung not in self._decided.get(config, {}) and self._ready(config, rung):
                    self._judge(tune_controller, config, rung)
        trials = tune_controller.get_trials()
        for trial in list(trials):
            # A stopped configuration's seed that Tune holds as pending or paused: a resumed sweep re-queues a
            # seed its last snapshot saw paused (Tune does not snapshot a paused trial's stop). Stopped before
            # it starts again.
            if trial.status in (Trial.PENDING, Trial.PAUSED) and self._config_of.get(trial.trial_id) in self._stopped:
                tune_controller.stop_trial(trial)
        for trial in trials:
            if trial.status == Trial.PAUSED and not self.waiting(trial) \
                    and self._config_of.get(trial.trial_id) not in self._stopped:
                return trial
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        return None

    def debug_string(self) -> str:
        return (f"Using ASHA over seed groups on {self._time_attr}: rungs {self._milestones}, "
                f"{len(self._stopped)} configuration(s) stopped")

    # ---------------------------------------------------------------- the rungs

    def _reach(self, tune_controller, trial: Trial, t: float, result: dict) -> str:
        """Record the rung ``trial`` reaches with this report, if any, and judge its configuration
        there once every seed has reached it; the decision for this report (CONTINUE when none)."""
        config = self._config_of[trial.trial_id]
        rungs = self._reached.setdefault(config, {})
        rung = next((m for m in sorted(self._milestones, reverse=True)
                     if t >= m and trial.trial_id not in rungs.get(_key(m), {})), None)
        if rung is None:
            return TrialScheduler.CONTINUE
        key = _key(rung)
        kept = {m: float(result[m]) for m in (*self._metrics, COLLAPSED) if _known(result.get(m))}
        rungs.setdefault(key, {})[trial.trial_id] = kept or {self._metric: float("nan")}
        decision = TrialScheduler.CONTINUE
        if key not in self._decided.get(config, {}) and self._ready(config, key):
            decision = self._judge(tune_controller, config, key, reporter=trial)
        self._persist()
        return decision

    def _seeds_of(self, config: str) -> list[Trial]:
        return [self._live[t] for t, c in self._config_of.items() if c == config and t in self._live]

    def _ready(self, config: str, key: str) -> bool:
        """Whether every seed of ``config`` has reached rung ``key``, or will not (failed, ended)."""
        seeds = self._seeds_of(config)
        reached = self._reached.get(config, {}).get(key, {})
        if not reached or len(seeds) < self._seeds:
            return False  # a seed not even created yet will come
        return all(t.trial_id in reached or t.status in (Trial.ERROR, Trial.TERMINATED) for t in seeds)

    def _give_asha(self, config: str, rung: float, value: float) -> str:
        if config not in self._in_asha:
            self._in_asha[config] = _Group(config)
            self._asha.on_trial_add(None, self._in_asha[config])
        return self._asha.on_trial_result(None, self._in_asha[config], {self._time_attr: rung, self._metric: value})

    def _judge(self, tune_controller, config: str, key: str, reporter: Trial | None = None) -> str:
        """Judge ``config`` at rung ``key`` on its seeds' mean, apply the decision to its waiting
        seeds and return it (for ``reporter``, the seed whose report completed the rung)."""
        reached = self._reached[config][key]
        rung = float(key)
        rung = int(rung) if rung.is_integer() else rung
        values = {m: float(np.mean([r[m] for r in reached.values()])) for m in self._metrics
                  if all(m in r for r in reached.values())}
        value = values.get(self._metric, float("nan"))
        flags = [r[COLLAPSED] for r in reached.values() if COLLAPSED in r]
        collapsed = bool(flags) and max(flags) >= 1.0
        if flags:
            values[COLLAPSED] = float(collapsed)  # Optuna is told it with the values (SeedGroups.prune)
        judged = (COLLAPSED_VALUE if self._mode == "min" else -COLLAPSED_VALUE) if collapsed else value
        decision = self._give_asha(config, rung, judged)
        self._judged.append({"config_id": config, "rung": rung, "value": judged, "mean": value,
                             "collapsed": collapsed, "decision": decision})
        if self._groups is not None and self._groups.is_reference(config):
            decision = TrialScheduler.CONTINUE  # the plain baseline: the floor is measured on it
        self._decided.setdefault(config, {})[key] = decision
        if decision == TrialScheduler.STOP:
            per_seed = {m: [reached[t].get(m, float("nan")) for t in sorted(reached)] for m in self._metrics}
            self._stopped[config] = {"rung": rung, "metric": self._metric, "value": value, "collapsed": collapsed,
                                     "seeds": len(reached),
                                     "per_seed": per_seed[self._metric], "values": values,
                                     "trial_ids": sorted(t.trial_id for t in self._seeds_of(config))}
            if self._groups is not None:
                self._groups.prune(config, rung, values, per_seed)
            self._persist()  # before the seeds end: the callbacks told of their end read it
            for seed in self._seeds_of(config):
                if seed is reporter or seed.status in (Trial.ERROR, Trial.TERMINATED):
                    continue
                if seed.status in (Trial.PAUSED, Trial.PENDING) or getattr(seed, "is_saving", False):
                    tune_controller.stop_trial(seed)
                # a running seed (restarted before the rung on resume) is stopped at its next report
        else:
            self._persist()
        return decision


# ---------------------------------------------------------------- the state in a run folder


def read_state_text(run_dir: str) -> str | None:
    """:data:`STATE_FILE` of a run folder (a path or a URI), or ``None`` where there is none."""
    from xling_ray.tune.storage import read_text

    try:
        return read_text(run_dir, STATE_FILE)
    except (FileNotFoundError, OSError):
        return None


def write_state_text(run_dir: str, text: str) -> None:
    """Write :data:`STATE_FILE` into a run folder: a new file moved over the old one, so that a
    driver killed while writing leaves the previous state whole."""
    from xling_ray.tune.storage import open_run_dir

    fs, path = open_run_dir(run_dir)
    fs.create_dir(f"{path}/{os.path.dirname(STATE_FILE)}", recursive=True)
    tmp = f"{path}/{STATE_FILE}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode())
    fs.move(tmp, f"{path}/{STATE_FILE}")


def load_stopped(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Config id -> where early stopping stopped it (:meth:`SeedGroupASHA.stopped`), from a run
    folder's :data:`STATE_FILE`; ``{}`` for a sweep without early stopping."""
    try:
        text = read_state_text(str(run_dir))
    except FileNotFoundError:
        return {}
    return dict(json.loads(text).get("stopped", {})) if text else {}


def stopped_label(stopped: dict[str, Any]) -> str:
    """The leaderboard's ``stopped_at`` of a stopped configuration: its rung and the mean of the
    judged metric there, e.g. ``1000 examples: gap 4.21``, and ``, collapsed`` where a seed had
    collapsed there (what it was judged on)."""
    value = stopped.get("value")
    shown = f"{value:.2f}" if _known(value) else "n/a"
    collapsed = ", collapsed" if stopped.get("collapsed") else ""
    return f"{_key(stopped['rung'])} examples: {stopped.get('metric', 'metric')} {shown}{collapsed}"
