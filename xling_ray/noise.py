"""How much of a gap is measurement noise: its standard error over the evaluated examples,
and a paired bootstrap between two configurations.

A gap is measured on a sample of evaluation examples (ids). Every language of a task is
evaluated on the same ids (translations), so a task's gap is a mean over ids of a per-id
score:

    gap_task = 100 * mean_i d(i),    d(i) = c_en(i) - mean_{l in L} c_l(i)

with ``c_l(i)`` 1 when the model got id ``i`` right in language ``l``. Resampling ids
therefore resamples English and the target languages together, as they share ids.
Likewise ``acc_en`` is a mean of ``c_en(i)`` and ``acc_target`` of ``mean_l c_l(i)``.
Every metric here is a weighted sum over tasks of such means:

    metric = sum_t w_t * 100 * mean_i x_t(i)

(``gap``: ``x_t = d``, ``w_t = 1/T``; ``acc_en``: ``x_t = c_en``, ``w_t = 1/T``;
``acc_target``: ``x_t = mean_l c_l``, ``w_t = |L_t| / sum |L|``, the pooled mean of
:func:`xling_ray.metrics.summarize`). Tasks have their own ids and are resampled
independently.

* :func:`standard_error`: the bootstrap standard error over ids. For a mean it has a
  closed form, the ideal bootstrap estimate (the limit of infinitely many resamples;
  Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 6: for a mean it is
  the plug-in ``[sum_i (x_i - mean x)^2]^(1/2) / n``), so it carries no Monte-Carlo error:

      se(metric) = 100 * sqrt( sum_t w_t^2 * var(x_t) / n_t ),  var with ddof 0.

  With targets always right (``c_l = 1``) the gap's is the binomial error of English,
  ``100 sqrt(p (1 - p) / n)``: 4.9 points at p = 60 % on 100 ids.
* :func:`combined_standard_error`: over seeds, the standard error of the mean over ``S``
  seeds: the seed spread and the sampling error added in quadrature,
  ``sqrt(sd_seeds^2 / S + se_ids^2)``.
* :func:`paired_bootstrap`: the difference of a metric between two configurations, with
  a percentile interval from resampling the shared ids (and the seeds), the paired
  bootstrap test of Koehn (2004, "Statistical Significance Tests for Machine Translation
  Evaluation") that Dror et al. (2018, "The Hitchhiker's Guide to Testing Statistical
  Significance in NLP") recommend for accuracy-like metrics. Two configurations whose
  interval holds 0 are within noise of each other.

Predictions are kept compactly (:class:`TaskPredictions`: one int8 array per task and
language, and the ids) in ``predictions.npz`` in every trial's last checkpoint.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from xling_ray.metrics import SOURCE_LANGUAGE

#: Resamples of :func:`paired_bootstrap` by default, and its random seed (fixed: the same
#: predictions give the same interval).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: The interval's coverage.
CONFIDENCE = 0.95
#: The accuracy (percent) at which a sweep states its evaluation noise before it has any.
TYPICAL_ACCURACY = 60.0
#: File of a trial's checkpoint that holds its predictions.
PREDICTIONS_FILE = "predictions.npz"
METRICS = ("gap", "acc_en", "acc_target")


@dataclass(frozen=True)
class TaskPredictions:
    """What a task's model predicted on every evaluated id: ``ids`` (the task's evaluated
    ids, the same and in the same order in every language), and per language the
    ``predicted`` class and the ``labels`` (int8 arrays aligned with ``ids``)."""

    ids: np.ndarray
    predicted: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    def correct(self) -> dict[str, np.ndarray]:
        """Per language, 1.0 where the prediction is right."""
        return {lang: (p == self.labels[lang]).astype(float) for lang, p in self.predicted.items()}

    def accuracy(self) -> dict[str, float]:
        """Per language, the accuracy in percent (what the trial reported)."""
        return {lang: 100.0 * float(c.mean()) for lang, c in self.correct().items()}

    def select(self, ids: Sequence[str]) -> "TaskPredictions":
        """The rows of ``ids``, in that order."""
        if len(ids) == len(self.ids) and all(str(a) == str(b) for a, b in zip(ids, self.ids)):
            return self
        where = {str(i): k for k, i in enumerate(self.ids)}
        rows = np.array([where[str(i)] for i in ids], dtype=int)
        return TaskPredictions(np.asarray(ids), {l: p[rows] for l, p in self.predicted.items()},
                               {l: y[rows] for l, y in self.labels.items()})


@dataclass(frozen=True)
class Predictions:
    """A model's predictions on every task (``{task: TaskPredictions}``), and the ``epoch``
    of the evaluation they come from."""

    tasks: dict[str, TaskPredictions]
    epoch: float = float("nan")

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        out = {f"{prefix}epoch": np.array(self.epoch, dtype=float)}
        for task, p in self.tasks.items():
            out[f"{prefix}ids__{task}"] = np.asarray(p.ids).astype(str)
            for lang in p.predicted:
                out[f"{prefix}pred__{task}__{lang}"] = np.asarray(p.predicted[lang], dtype=np.int8)
                out[f"{prefix}label__{task}__{lang}"] = np.asarray(p.labels[lang], dtype=np.int8)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> "Predictions":
        tasks: dict[str, TaskPredictions] = {}
        keys = [k.removeprefix(prefix) for k in arrays if k.startswith(prefix)]
        for key in keys:
            if key.startswith("ids__"):
                task = key.removeprefix("ids__")
                langs = [k.split("__")[2] for k in keys if k.startswith(f"pred__{task}__")]
                tasks[task] = TaskPredictions(
                    np.asarray(arrays[prefix + key]).astype(str),
                    {l: np.asarray(arrays[f"{prefix}pred__{task}__{l}"]) for l in langs},
                    {l: np.asarray(arrays[f"{prefix}label__{task}__{l}"]) for l in langs})
        return cls(tasks, float(arrays[f"{prefix}epoch"]))

    def to_bytes(self) -> bytes:
        return save_arrays(self.to_arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Predictions":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls.from_arrays(dict(arrays))


def save_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``np.savez_compressed`` into bytes (to write through any filesystem)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_predictions_table(data: bytes) -> dict[str, Predictions]:
    """``{trial_id: Predictions}`` from the bytes :func:`save_predictions_table` wrote."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = dict(npz)
    trial_ids = sorted({k.split("::", 1)[0] for k in arrays})
    return {t: Predictions.from_arrays(arrays, f"{t}::") for t in trial_ids}


def save_predictions_table(predictions: Mapping[str, Predictions]) -> bytes:
    """Every trial's predictions in one ``.npz`` (keys prefixed ``<trial_id>::``)."""
    arrays: dict[str, np.ndarray] = {}
    for trial_id, p in predictions.items():
        arrays.update(p.to_arrays(f"{trial_id}::"))
    return save_arrays(arrays)


# ------------------------------------------------------------------ per-id scores


def per_id_scores(p: TaskPredictions, metric: str, source: str = SOURCE_LANGUAGE) -> np.ndarray:
    """``x(i)`` of one task (module docstring), in percent: ``gap``: ``100 (c_en - mean_l c_l)``;
    ``acc_en``: ``100 c_en``; ``acc_target``: ``100 mean_l c_l``."""
    c = p.correct()
    targets = [c[l] for l in c if l != source]
    if metric == "acc_en":
        return 100.0 * c[source]
    if not targets:
        raise ValueError(f"{metric}: no target language besides '{source}'")
    target = np.mean(targets, axis=0)
    if metric == "acc_target":
        return 100.0 * target
    if metric == "gap":
        return 100.0 * (c[source] - target)
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def task_weights(tasks: Mapping[str, TaskPredictions], metric: str, source: str = SOURCE_LANGUAGE) -> dict[str, float]:
    """``w_t`` of the module docstring: ``1/T`` over the tasks that have the metric;
    ``acc_target`` weighs each task by its number of target languages (a pooled mean)."""
    if metric == "acc_target":
        counts = {t: sum(l != source for l in p.predicted) for t, p in tasks.items()}
        total = sum(counts.values())
        return {t: n / total for t, n in counts.items() if n}
    if metric == "gap":
        has = [t for t, p in tasks.items() if source in p.predicted and len(p.predicted) > 1]
    else:
        has = [t for t, p in tasks.items() if source in p.predicted]
    return {t: 1.0 / len(has) for t in has}


# ------------------------------------------------------------------ standard errors


def standard_error(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> float:
    """The ideal bootstrap standard error over ids of ``sum_t w_t mean_i x_t(i)``:
    ``sqrt(sum_t w_t^2 var(x_t) / n_t)``, ``var`` with ddof 0 (the ideal bootstrap's, Efron & Tibshirani 1993, ch. 6).

    >>> round(standard_error({"xnli": np.array([100.0] * 60 + [0.0] * 40)}, {"xnli": 1.0}), 4)  # 100 sqrt(.24/100)
    4.899
    """
    return math.sqrt(sum(w * w * float(np.var(scores[t])) / len(scores[t]) for t, w in weights.items()))


def standard_errors(seeds: Sequence[Predictions], source: str = SOURCE_LANGUAGE) -> dict[str, float]:
    """``<metric>_se`` for ``gap``, ``acc_en``, ``acc_target`` and each ``gap_<task>``: the
    sampling error of the metric's mean over ``seeds`` (one :class:`Predictions` per seed,
    evaluated on the same ids), from the seed-averaged per-id scores. One seed: a trial's."""
    first = seeds[0].tasks
    out: dict[str, float] = {}
    for metric in METRICS:
        weights = task_weights(first, metric, source)
        if not weights:
            continue
        scores = {t: np.mean([per_id_scores(s.tasks[t], metric, source) for s in seeds], axis=0) for t in weights}
        out[f"{metric}_se"] = standard_error(scores, weights)
        if metric == "gap":
            for t in weights:
                out[f"gap_{t}_se"] = standard_error({t: scores[t]}, {t: 1.0})
    return out


def combined_standard_error(seed_sd: float, seeds: int, sampling_se: float) -> float:
    """The standard error of a mean over ``seeds`` seeds, seed spread and sampling error
    combined: ``sqrt(seed_sd^2 / seeds + sampling_se^2)``; the sampling error alone where
    there is no spread to measure (one seed, ``seed_sd`` NaN).

    >>> combined_standard_error(3.0, 3, 1.0)  # sqrt(9 / 3 + 1)
    2.0
    """
    if seeds < 2 or not math.isfinite(seed_sd):
        return sampling_se
    return math.sqrt(seed_sd**2 / seeds + sampling_se**2)


def binomial_se(n: int, accuracy: float = TYPICAL_ACCURACY) -> float:
    """The standard error (points) of an accuracy ``accuracy`` % on ``n`` examples,
    ``100 sqrt(p (1 - p) / n)``: the English part of a task's gap error.

    >>> round(binomial_se(100), 2)
    4.9
    """
    p = accuracy / 100.0
    return 100.0 * math.sqrt(p * (1 - p) / n)


def size_for(se: float = 1.0, accuracy: float = TYPICAL_ACCURACY) -> int:
    """The fewest examples whose :func:`binomial_se` is under ``se`` points:
    ``floor(100^2 p (1 - p) / se^2) + 1``.

    >>> size_for(1.0)  # 100^2 * 0.24 = 2400 gives exactly 1.0
    2401
    """
    p = accuracy / 100.0
    return math.floor(round(1e4 * p * (1 - p) / se**2, 9)) + 1


# ------------------------------------------------------------------ paired bootstrap


@dataclass(frozen=True)
class Difference:
    """``b - a`` of a metric (points), its ``confidence`` percentile interval ``[low, high]``
    from :func:`paired_bootstrap`, the ``ids`` it was measured on (per task, summed) and
    whether the seeds were paired."""

    diff: float
    low: float
    high: float
    ids: int
    seeds: tuple[int, int]
    paired_seeds: bool
    confidence: float = CONFIDENCE
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def beyond_noise(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: Sequence[Predictions], b: Sequence[Predictions], metric: str = "gap",
                     seeds_a: Sequence[int] | None = None, seeds_b: Sequence[int] | None = None,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     confidence: float = CONFIDENCE, source: str = SOURCE_LANGUAGE) -> Difference:
    """The difference ``metric(b) - metric(a)`` of two configurations, each the mean over its
    seeds, with a percentile interval from a paired bootstrap (Koehn 2004; Dror et al. 2018).

    Each resample draws, per task, ``n_t`` ids with replacement from the ids both
    evaluated (the same draw for ``a`` and ``b``: paired), and draws seeds with
    replacement; when both ran the same seeds (``seeds_a == seeds_b``) the same seeds
    for both (paired: a seed fixes the initialisation and the data order), else each
    configuration's own. The replicate is

        delta* = sum_t w_t [ sum_s v_b(s) m_b,s,t - sum_s v_a(s) m_a,s,t ],

    ``m_s,t`` the mean of ``x_t`` over the drawn ids for seed ``s``, ``v(s)`` the share of
    the seed draw that is ``s``. The interval is the ``(1 - confidence)/2`` and
    ``(1 + confidence)/2`` quantiles of ``delta*`` over ``resamples`` draws from a generator
    seeded with ``seed`` (the same inputs give the same interval).
    """
    common = [t for t in a[0].tasks if all(t in p.tasks for p in (*a, *b))]
    ids = {t: _shared_ids([p.tasks[t] for p in (*a, *b)]) for t in common}
    weights = task_weights({t: a[0].tasks[t] for t in common}, metric, source)
    if not weights:
        raise ValueError(f"paired_bootstrap: no task has {metric}")
    seeds_a = list(seeds_a) if seeds_a is not None else list(range(len(a)))
    seeds_b = list(seeds_b) if seeds_b is not None else list(range(len(b)))
    paired = seeds_a == seeds_b
    rng = np.random.default_rng(seed)
    va = rng.multinomial(len(a), [1 / len(a)] * len(a), size=resamples) / len(a)
    vb = va if paired else rng.multinomial(len(b), [1 / len(b)] * len(b), size=resamples) / len(b)
    diff, samples = 0.0, np.zeros(resamples)
    for t, w in weights.items():
        xa = np.stack([per_id_scores(p.tasks[t].select(ids[t]), metric, source) for p in a])  # (S_a, n)
        xb = np.stack([per_id_scores(p.tasks[t].select(ids[t]), metric, source) for p in b])
        n = len(ids[t])
        counts = rng.multinomial(n, [1 / n] * n, size=resamples) / n  # (R, n): each id's share of the draw
        diff += w * (xb.mean() - xa.mean())
        samples += w * (((counts @ xb.T) * vb).sum(1) - ((counts @ xa.T) * va).sum(1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return Difference(float(diff), float(low), float(high), sum(len(v) for v in ids.values()),
                      (len(a), len(b)), paired, confidence, samples)


def _shared_ids(parts: Sequence[TaskPredictions]) -> list[str]:
    """The ids every part evaluated, in the first part's order."""
    shared = set(map(str, parts[0].ids))
    for p in parts[1:]:
        shared &= set(map(str, p.ids))
    return [str(i) for i in parts[0].ids if str(i) in shared]
