"""Cross-lingual transfer metrics.

The transfer gap of a task (Hu et al., 2020, XTREME, section 5) is

    gap_task = acc_task(en) - mean_{l in L_task, l != en} acc_task(l)

and the headline gap is the mean of the task gaps over the tasks evaluated
(a sweep over one task reports that task's gap). With XTREME's mBERT rows
(XNLI en 80.8, others mean 64.3; PAWS-X en 94.0, others mean 79.95) this gives
16.5, 14.05 and 15.275 (printed 15.3).

All accuracies here are percentages.

A model that learned nothing predicts one class for (nearly) every example: its
accuracies sit at the share of that class in every language, so its gap is near 0,
the best a gap can be. :func:`summarize` therefore also reports how concentrated the
predictions are (``top_class_<task>_<lang>``) and flags a collapsed task (see
:data:`COLLAPSE_THRESHOLD`), which the leaderboard ranks after every model that learned.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

SOURCE_LANGUAGE = "en"

#: A task's English predictions have *collapsed* when the most predicted class takes at
#: least this share (percent) of them: the model answers (almost) one class whatever the
#: input. Far above any real class balance: XNLI's dev set is 33.3 % per class and
#: PAWS-X English's majority class 56.9 %, so a model that learned anything stays well
#: below it.
COLLAPSE_THRESHOLD = 95.0


def top_share(counts: Sequence[float]) -> float:
    """The share (percent) of the largest of ``counts``: of the most predicted class when
    ``counts`` counts predictions per class, of the majority class when it counts labels
    (then it is the accuracy of always predicting that class). NaN when all are 0.

    >>> top_share([2, 6, 2])
    60.0
    """
    total = float(sum(counts))
    return 100.0 * float(max(counts)) / total if total > 0 else float("nan")


def is_collapsed(top_class: float, threshold: float = COLLAPSE_THRESHOLD) -> bool:
    """Whether predictions whose most predicted class has share ``top_class`` (percent)
    collapsed: ``top_class >= threshold`` (default :data:`COLLAPSE_THRESHOLD`, 95)."""
    return top_class >= threshold


def transfer_gap(accuracy: Mapping[str, float], source: str = SOURCE_LANGUAGE) -> float:
    """``acc(source) - mean acc(other languages)``.

    >>> transfer_gap({"en": 80.0, "de": 70.0, "fr": 60.0})
    15.0
    """
    if source not in accuracy:
        raise ValueError(f"transfer_gap: no accuracy for the source language '{source}' (have {sorted(accuracy)})")
    targets = [v for lang, v in accuracy.items() if lang != source]
    if not targets:
        raise ValueError(f"transfer_gap: no target language besides '{source}'")
    return accuracy[source] - sum(targets) / len(targets)


def summarize(accuracy: Mapping[str, Mapping[str, float]], source: str = SOURCE_LANGUAGE, *,
              top_class: Mapping[str, Mapping[str, float]] | None = None,
              majority: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, float]:
    """Every leaderboard metric from ``{task: {language: accuracy}}``.

    Returns ``acc_<task>_<lang>``, ``gap_<task>``, ``acc_<task>_target`` (mean
    over target languages), ``acc_en`` (mean English accuracy over tasks),
    ``acc_target`` (mean over every task's target languages, pooled) and
    ``gap`` (mean of the task gaps, over the tasks that have a target language).

    With ``top_class`` (``{task: {language: share of the most predicted class}}``):
    ``top_class_<task>_<lang>``, ``collapsed_<task>`` (1.0 when the task's English
    predictions collapsed, :func:`is_collapsed`, else 0.0) and ``collapsed`` (1.0
    when any task collapsed). With ``majority`` (``{task: {language: share of the
    most frequent label}}``): ``majority_en``, the English accuracy of always
    predicting each task's most frequent class, averaged over tasks like ``acc_en``.
    """
    out: dict[str, float] = {}
    gaps, en, pooled = [], [], []
    for task, per_lang in accuracy.items():
        for lang, acc in per_lang.items():
            out[f"acc_{task}_{lang}"] = float(acc)
        targets = [float(v) for lang, v in per_lang.items() if lang != source]
        if source in per_lang:
            en.append(float(per_lang[source]))
        if targets:
            out[f"acc_{task}_target"] = sum(targets) / len(targets)
            pooled.extend(targets)
            if source in per_lang:
                out[f"gap_{task}"] = transfer_gap(per_lang, source)
                gaps.append(out[f"gap_{task}"])
    if en:
        out["acc_en"] = sum(en) / len(en)
    if pooled:
        out["acc_target"] = sum(pooled) / len(pooled)
    if gaps:
        out["gap"] = sum(gaps) / len(gaps)
    if top_class is not None:
        out.update(_collapse_metrics(top_class, source))
    if majority is not None:
        en_majority = [float(per_lang[source]) for per_lang in majority.values() if source in per_lang]
        if en_majority:
            out["majority_en"] = sum(en_majority) / len(en_majority)
    return out


def _collapse_metrics(top_class: Mapping[str, Mapping[str, float]], source: str) -> dict[str, float]:
    """``top_class_<task>_<lang>``, ``collapsed_<task>`` (on the ``source`` language) and ``collapsed``."""
    out: dict[str, float] = {}
    flags = []
    for task, per_lang in top_class.items():
        for lang, share in per_lang.items():
            out[f"top_class_{task}_{lang}"] = float(share)
        if source in per_lang:
            flags.append(is_collapsed(float(per_lang[source])))
            out[f"collapsed_{task}"] = float(flags[-1])
    if flags:
        out["collapsed"] = float(any(flags))
    return out
