"""Where a sweep's numbers go besides its run folder: MLflow and TensorBoard.

**MLflow** (:class:`MLflowTracking`, a Tune callback in the driver, with MLflow's own
client): one parent run per sweep (and per ``final``), one child run per trial nested
under it (MLflow's ``mlflow.parentRunId`` tag), with

* params: the trial's settings (the searched values) and its seed;
* tags: ``trial_id``, ``seed``, ``config_id`` (as the leaderboard has it: set when the
  sweep ends, from the leaderboard; while it runs, the first trial of equal settings);
* metrics: every number the trial reports (the 22 per-language accuracies, the task gaps
  and the headline gap, the loss parts, epoch, timings), at the step of each report;
* the parent's artifacts, when the stage ends (:func:`finish_mlflow`): the search space,
  the leaderboard files and the HTML report.

A trial whose configuration early stopping stopped (``sweep.scheduler: asha``) ends ``KILLED``
(MLflow's status for a run ended before its end) with the tags ``pruned`` (``true``, as Optuna
marks the configuration ``PRUNED``) and ``stopped_at`` (the leaderboard's, e.g. ``1000 examples:
gap 4.21``).

A resumed sweep finds its parent and its trials' runs again by their tags (``xling_run_dir``,
``xling_stage``; ``trial_id``), continues them, and logs only the reports past the last step
a run already has: no run and no point twice. The tracking URI is a ``file:`` folder,
a database (``sqlite:///mlflow.db``) or an ``http(s)://`` tracking server; the stage's
settings are kept in ``RUN_DIR/tracking.json`` so that ``--resume`` continues them.

**TensorBoard** (:class:`ReadableTensorBoard`): Tune's TensorBoardX logger with readable
names, ``xnli/acc_th``, ``pawsx/loss_ce``, ``gap/xnli``, ``gap/mean``, ``acc/target``, written
into each trial's folder: ``tensorboard --logdir RUN_DIR``.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from xling_ray.config import TASKS

TRACKING_FILE = "tracking.json"
EXPERIMENT = "xling-ray"

#: Tune's bookkeeping in a result: not metrics of the trial.
BOOKKEEPING = frozenset({"pid", "timestamp", "done", "should_checkpoint", "training_iteration", "iterations_since_restore",
                         "time_since_restore", "time_this_iter_s", "trial_id", "date", "hostname", "node_ip",
                         "experiment_tag", "config"})


def metrics_of(result: dict[str, Any]) -> dict[str, float]:
    """The numbers a trial reported, without Tune's bookkeeping."""
    return {k: float(v) for k, v in result.items()
            if k not in BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool)}


_TASK_KEY = re.compile(rf"^(acc|top_class|loss)_({'|'.join(TASKS)})_(.+)$")


def tensorboard_name(key: str) -> str:
    """``acc_xnli_th`` -> ``xnli/acc_th``, ``loss_pawsx_ce`` -> ``pawsx/loss_ce``, ``gap_xnli`` ->
    ``gap/xnli``, ``gap`` -> ``gap/mean``, ``acc_en`` -> ``acc/en``, ``collapsed_xnli`` ->
    ``xnli/collapsed``, ``time_eval_s`` -> ``time/eval_s``, a sampling error beside its metric (``gap_se`` ->
    ``gap/mean_se``, ``gap_xnli_se`` -> ``gap/xnli_se``, ``acc_en_se`` -> ``acc/en_se``); anything else as it is."""
    m = _TASK_KEY.match(key)
    if m:
        kind, task, rest = m.groups()
        return f"{task}/{kind}_{rest}"
    for task in TASKS:
        if key == f"gap_{task}":
            return f"gap/{task}"
        if key == f"collapsed_{task}":
            return f"{task}/collapsed"
    if key == "gap":
        return "gap/mean"
    if key in ("acc_en", "acc_target", "majority_en"):
        return "acc/" + key.removeprefix("acc_")
    if key.endswith("_se") and key.removesuffix("_se") in ("gap", "acc_en", "acc_target", *(f"gap_{t}" for t in TASKS)):
        return tensorboard_name(key.removesuffix("_se")) + "_se"  # the sampling error beside its metric: gap/mean_se
    if key.startswith("time_"):
        return "time/" + key.removeprefix("time_")
    return key


class ReadableTensorBoard(TBXLoggerCallback):
    """Tune's TensorBoardX logger (one event file per trial, in the trial's folder) with
    :func:`tensorboard_name` names. A subclass, so that Tune adds no second one of its own."""

    def __init__(self):
        super().__init__()
        self._writers: dict[str, Any] = {}

    def log_trial_start(self, trial) -> None:
        from tensorboardX import SummaryWriter

        if trial.trial_id in self._writers:
            self._writers[trial.trial_id].close()
        trial.init_local_path()
        self._writers[trial.trial_id] = SummaryWriter(trial.local_path, flush_secs=30)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial.trial_id not in self._writers:
            self.log_trial_start(trial)
        writer = self._writers[trial.trial_id]
        step = result.get("training_iteration", iteration)
        for key, value in metrics_of(result).items():
            if not math.isnan(value):
                writer.add_scalar(tensorboard_name(key), value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()


# ---------------------------------------------------------------- MLflow


def mlflow_client(uri: str):
    """MLflow's client for ``uri``. MLflow 3 keeps ``file:`` stores in maintenance mode and
    refuses them unless ``MLFLOW_ALLOW_FILE_STORE`` is set: naming one is that choice."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        from xling_ray.config import ConfigError

        raise ConfigError(f"--mlflow {uri}: the mlflow package is not installed; pip install 'xling-ray[mlflow]'") from None
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def artifact_root(uri: str, run_dir: str | None) -> str | None:
    """Where the experiment keeps its artifacts (the leaderboard files, the report) when xling-ray
    creates it, as a ``file://`` URI; ``None`` where the tracking store itself says.

    MLflow's default for a database store is ``./mlruns`` of whatever folder the command ran in,
    which an ``mlflow ui`` started elsewhere cannot show. So:

    * ``sqlite:///PATH/mlflow.db``: ``PATH/mlartifacts``, beside the database;
    * another database (``postgresql://``, ``mysql://``, ...): ``STORAGE/mlartifacts``, beside the
      run folders of ``--storage`` (``None`` for a run folder whose URI has a query string);
    * a ``file:`` store or a plain folder: ``None``, MLflow keeps them inside the store;
    * an ``http(s)://`` tracking server: ``None``, the server's ``--default-artifact-root`` or
      ``--artifacts-destination``.

    An experiment that already exists keeps the place it was created with."""
    from urllib.parse import urlparse

    from xling_ray.tune.storage import is_uri

    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if scheme == "sqlite":
        path = uri.split("://", 1)[1].split("?", 1)[0].removeprefix("/")  # sqlite:///rel.db, sqlite:////abs.db
        if path and path != ":memory:":
            return (Path(path).expanduser().resolve().parent / "mlartifacts").as_uri()
    elif scheme in ("", "file", "http", "https", "databricks"):
        return None
    if run_dir is None or "?" in str(run_dir):
        return None
    storage = str(run_dir).rstrip("/").rsplit("/", 1)[0]
    return f"{storage}/mlartifacts" if is_uri(storage) else (Path(storage) / "mlartifacts").as_uri()


def _experiment_id(client, name: str, artifact_location: str | None = None) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name, artifact_location)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def parent_run(client, experiment_id: str, run_dir: str, stage: str, create: bool = True) -> str | None:
    """The id of the stage's parent run (found by its tags, else made when ``create``)."""
    found = client.search_runs([experiment_id], f"tags.xling_run_dir = {_quote(run_dir)} and "
                                                f"tags.xling_stage = {_quote(stage)}", max_results=1)
    if found:
        return found[0].info.run_id
    if not create:
        return None
    name = f"{Path(run_dir).name}/{stage}" if stage != "sweep" else Path(run_dir).name
    return client.create_run(experiment_id, run_name=name,
                             tags={"xling_run_dir": run_dir, "xling_stage": stage}).info.run_id


def child_runs(client, experiment_id: str, parent_id: str) -> list:
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = {_quote(parent_id)}", max_results=5000)


class MLflowTracking(Callback):
    """Log a Tune run's trials to MLflow (module docstring). ``jobs``: for ``final``, job id
    -> ``{config_id, seed, settings}``; else the trial's config holds its settings and seed
    index (``__trial_index__``), added to ``base_seed``."""

    early_stopping = None  # a callback pickled by an earlier version (a resumed sweep) lacks it

    def __init__(self, uri: str, run_dir: str, stage: str = "sweep", experiment: str = EXPERIMENT,
                 base_seed: int = 0, jobs: dict[str, dict[str, Any]] | None = None, early_stopping=None):
        self.uri, self.run_dir, self.stage, self.experiment = uri, str(run_dir), stage, experiment
        self.base_seed, self.jobs = base_seed, jobs
        self.early_stopping = early_stopping  # the sweep's SeedGroupASHA: which trials it stopped
        self._client = None
        self._parent: str | None = None
        self._runs: dict[str, str] = {}      # trial id -> run id
        self._last_step: dict[str, int] = {}  # run id -> last step logged
        self._done: set[str] = set()          # trial ids whose run had finished before (a resumed sweep)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment: never the client
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            self._client = mlflow_client(self.uri)
        return self._client

    def describe(self, config: dict[str, Any]) -> tuple[str | None, int, dict[str, Any]]:
        """``(config_id or None, seed, settings)`` of a trial's Tune config."""
        if self.jobs is not None:
            job = self.jobs[config["job"]]
            return job["config_id"], int(job["seed"]), dict(job["settings"])
        from xling_ray.tune.search import seed_index

        settings, index = seed_index(config)
        return None, int(settings.get("train.seed", self.base_seed)) + index, settings

    # ---------------------------------------------------------------- Tune's hooks

    def setup(self, **info) -> None:
        experiment_id = _experiment_id(self.client, self.experiment, artifact_root(self.uri, self.run_dir))
        self._experiment_id = experiment_id
        self._parent = parent_run(self.client, experiment_id, self.run_dir, self.stage)
        self.client.update_run(self._parent, status="RUNNING")
        for run in child_runs(self.client, experiment_id, self._parent):  # what a resumed stage already has
            trial_id = run.data.tags.get("trial_id")
            if trial_id:
                self._runs[trial_id] = run.info.run_id
                if run.info.status == "FINISHED" or run.data.tags.get("pruned") == "true":
                    self._done.add(trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        if trial.trial_id in self._done:
            return
        run_id = self._runs.get(trial.trial_id)
        config_id, seed, settings = self.describe(trial.config or {})
        if run_id is None:
            if config_id is None:  # the first trial (in id order) of equal settings, as the leaderboard names it
                same = [t.trial_id for t in trials if self.describe(t.config or {})[2] == settings]
                config_id = min(same + [trial.trial_id])
            run_id = self.client.create_run(
                self._experiment_id, run_name=trial.trial_id,
                tags={"mlflow.parentRunId": self._parent, "trial_id": trial.trial_id, "seed": str(seed),
                      "config_id": config_id}).info.run_id
            self._runs[trial.trial_id] = run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in sorted(settings.items())] + [Param("seed", str(seed))]
            self.client.log_batch(run_id, params=params)
        else:
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, "epoch")
            self._last_step[run_id] = max((m.step for m in history), default=0)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None or trial.trial_id in self._done:
            return
        step = int(result.get("training_iteration", iteration))
        if step <= self._last_step.get(run_id, 0):
            return  # a resumed trial reports again from its checkpoint: logged already
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in sorted(metrics_of(result).items())]
        for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        self._last_step[run_id] = step

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, "FAILED")

    def _end(self, trial, status: str) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None or trial.trial_id in self._done:
            return
        stopped = self._stopped_at(trial.trial_id) if status == "FINISHED" else None
        if stopped is not None:
            self.client.set_tag(run_id, "pruned", "true")
            self.client.set_tag(run_id, "stopped_at", stopped)
            status = "KILLED"
        self.client.set_terminated(run_id, status=status)
        if status in ("FINISHED", "KILLED"):
            self._done.add(trial.trial_id)

    def _stopped_at(self, trial_id: str) -> str | None:
        """The leaderboard's ``stopped_at`` when early stopping stopped the trial's configuration."""
        if self.early_stopping is None:
            return None
        from xling_ray.tune.early_stopping import stopped_label

        config_id = self.early_stopping.config_of(trial_id)
        where = self.early_stopping.stopped().get(config_id) if config_id is not None else None
        return stopped_label(where) if where is not None else None


# ---------------------------------------------------------------- a stage's settings and its end


def save_tracking(run_dir: str, stage: str, uri: str, experiment: str = EXPERIMENT) -> None:
    """Record that ``stage`` of ``run_dir`` logs to ``uri``, for ``--resume`` and :func:`finish_mlflow`."""
    from xling_ray.tune.storage import read_text, write_text

    try:
        saved = json.loads(read_text(run_dir, TRACKING_FILE))
    except FileNotFoundError:
        saved = {}
    saved[stage] = {"mlflow": uri, "experiment": experiment}
    write_text(run_dir, TRACKING_FILE, json.dumps(saved, indent=1))


def saved_tracking(run_dir: str, stage: str) -> dict[str, str] | None:
    """What :func:`save_tracking` recorded for ``stage``, or ``None``."""
    from xling_ray.tune.storage import read_text

    try:
        return json.loads(read_text(run_dir, TRACKING_FILE)).get(stage)
    except FileNotFoundError:
        return None


def check_mlflow(uri: str, experiment: str = EXPERIMENT, run_dir: str | None = None) -> None:
    """Reach the tracking store before Ray starts: a wrong URI fails in one line. Creates the
    experiment where it does not exist yet, its artifacts at :func:`artifact_root`."""
    from xling_ray.config import ConfigError

    try:
        _experiment_id(mlflow_client(uri), experiment, artifact_root(uri, run_dir))
    except ConfigError:
        raise
    except Exception as err:  # MLflow's errors: unreachable server, refused store, bad URI
        text = " ".join(str(err).split())[:300]
        raise ConfigError(f"--mlflow {uri}: cannot log there ({type(err).__name__}: {text})") from None


def finish_mlflow(run_dir: str, stage: str, files: list[str | Path], config_ids: dict[str, str]) -> str | None:
    """End ``stage``'s parent run: log ``files`` (leaderboard, report) as its artifacts, tag each
    trial's run with the leaderboard's ``config_id`` (trial id -> id). Returns the parent's id,
    or ``None`` when the stage logs to no MLflow."""
    tracking = saved_tracking(run_dir, stage)
    if not tracking:
        return None
    client = mlflow_client(tracking["mlflow"])
    experiment_id = _experiment_id(client, tracking["experiment"], artifact_root(tracking["mlflow"], str(run_dir)))
    parent = parent_run(client, experiment_id, str(run_dir), stage, create=False)
    if parent is None:
        return None
    for run in child_runs(client, experiment_id, parent):
        config_id = config_ids.get(run.data.tags.get("trial_id", ""))
        if config_id and run.data.tags.get("config_id") != config_id:
            client.set_tag(run.info.run_id, "config_id", config_id)
    for path in files:
        if Path(path).is_file():
            client.log_artifact(parent, str(path))
    client.set_terminated(parent, status="FINISHED")
    return parent
