"""Cross-lingual transfer metrics.

The transfer gap of a task (Hu et al., 2020, XTREME, section 5) is

    gap_task = acc_task(en) - mean_{l in L_task, l != en} acc_task(l)

and the headline gap is the mean of the task gaps over the tasks evaluated
(a sweep over one task reports that task's gap). With XTREME's mBERT rows
(XNLI en 80.8, others mean 64.3; PAWS-X en 94.0, others mean 79.95) this gives
16.5, 14.05 and 15.275 (printed 15.3).

All accuracies here are percentages.
"""
from __future__ import annotations

from collections.abc import Mapping

SOURCE_LANGUAGE = "en"


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


def summarize(accuracy: Mapping[str, Mapping[str, float]], source: str = SOURCE_LANGUAGE) -> dict[str, float]:
    """Every leaderboard metric from ``{task: {language: accuracy}}``.

    Returns ``acc_<task>_<lang>``, ``gap_<task>``, ``acc_<task>_target`` (mean
    over target languages), ``acc_en`` (mean English accuracy over tasks),
    ``acc_target`` (mean over every task's target languages, pooled) and
    ``gap`` (mean of the task gaps, over the tasks that have a target language).
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
    return out
