"""Target-language text pools: unlabeled sentences (``TextPool``) and translation
pairs (``ParallelPool``) for methods that adapt to a target language without its
labels (e.g. XITE, :mod:`xling_ray.methods.xite`).

Where a pool comes from:

* ``text_file_pool``: one sentence per line;
* ``parallel_file_pool``: ``target ||| English`` per line (the format of Efimov et al.);
* ``hub_text_pool``: one text column of a Hugging Face dataset;
* ``benchmark_pools``: the first ``take_first`` examples (in id order) of a
  benchmark's evaluation split, each language paired with the English example of
  the same id. Those examples must then be left out of evaluation: ``skip_first``
  (what ``DataConfig.eval_skip_first`` means) and ``eval_ids_after`` share the
  one definition of "the first n in id order" with ``benchmark_pools``, and
  ``check_no_leakage`` refuses a pool that still meets the evaluation sets.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from xling_ray.data.benchmarks import BENCHMARKS, DataError, get_benchmark
from xling_ray.data.sources import OFFLINE_HINT, DataSource, PairDataset

__all__ = [
    "LeakageError",
    "ParallelPool",
    "TextPool",
    "benchmark_pools",
    "check_no_leakage",
    "eval_ids_after",
    "first_ids",
    "hub_text_pool",
    "id_order",
    "normalize_text",
    "parallel_file_pool",
    "skip_first",
    "text_file_pool",
]

#: The separator of a parallel file line: ``target ||| English``.
PARALLEL_SEPARATOR = " ||| "


class LeakageError(DataError):
    """A training pool shares examples (ids or texts) with an evaluation set."""


def normalize_text(text: str) -> str:
    """The form texts are compared in (de-duplication, leakage): whitespace runs
    collapsed to one space, ends stripped. Case and punctuation are kept."""
    return " ".join(text.split())


def _check_lengths(kind: str, language: str, source: str, columns: dict[str, tuple[str, ...]]) -> None:
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{kind}({language!r}, source {source!r}): columns differ in length {lengths}")


def _sample_rows(n: int, max_size: int | None, seed: int) -> list[int] | None:
    """Rows of a ``max_size`` draw with ``seed`` in their original order; None: keep all."""
    if max_size is None:
        return None
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1 or None, got {max_size}")
    if max_size >= n:
        return None
    # A private Random, as PairDataset.subsample: the draw depends on the seed only.
    return sorted(random.Random(seed).sample(range(n), max_size))


@dataclass(frozen=True, repr=False)
class TextPool:
    """Unlabeled text of one language; entry i is (ids[i], texts[i]).

    ``source`` says where it came from: a file path, ``hub:<dataset>/<config>/<split>:<column>``,
    or ``<task>/<split>`` for a pool cut from a benchmark (read by :func:`check_no_leakage`).
    """

    language: str
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        _check_lengths("TextPool", self.language, self.source, {"ids": self.ids, "texts": self.texts})

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"TextPool(language={self.language!r}, source={self.source!r}, n={len(self)})"

    def subsample(self, n: int | None, seed: int = 0) -> TextPool:
        """``n`` entries drawn with ``seed``, in their original order (all if ``n`` is None or >= len)."""
        rows = _sample_rows(len(self), n, seed)
        if rows is None:
            return self
        return TextPool(self.language, tuple(self.ids[i] for i in rows), tuple(self.texts[i] for i in rows), self.source)


@dataclass(frozen=True, repr=False)
class ParallelPool:
    """Translation pairs of one target language with English; entry i is
    (ids[i], target[i], english[i]) and english[i] is a translation of target[i]."""

    language: str
    ids: tuple[str, ...]
    target: tuple[str, ...]
    english: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        _check_lengths(
            "ParallelPool", self.language, self.source, {"ids": self.ids, "target": self.target, "english": self.english}
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"ParallelPool(language={self.language!r}, source={self.source!r}, n={len(self)})"

    def target_pool(self) -> TextPool:
        """The target side alone, same ids and source."""
        return TextPool(self.language, self.ids, self.target, self.source)

    def subsample(self, n: int | None, seed: int = 0) -> ParallelPool:
        """``n`` pairs drawn with ``seed``, in their original order (all if ``n`` is None or >= len)."""
        rows = _sample_rows(len(self), n, seed)
        if rows is None:
            return self
        return ParallelPool(
            self.language,
            tuple(self.ids[i] for i in rows),
            tuple(self.target[i] for i in rows),
            tuple(self.english[i] for i in rows),
            self.source,
        )


Pool = Union[TextPool, ParallelPool]


# ---------------------------------------------------------------- files


def _check_language(language: str, where: str) -> None:
    if not isinstance(language, str) or not language.strip():
        raise DataError(f"{where}: language must be a non-empty code such as 'sw', got {language!r}")


def _read_lines(path: str | Path, language: str) -> tuple[str, list[str]]:
    """(path as text, lines without their end); errors name the file and the language."""
    path = Path(path).expanduser()
    where = f"{path} (pool for language '{language}')"
    try:
        # No universal newlines, as the benchmark reader: only \n (and a \r before it) ends a line.
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 text ({err})") from None
    except OSError as err:
        raise DataError(f"{where}: cannot read ({err})") from None
    if lines and lines[-1] == "":
        lines.pop()
    return str(path), [line[:-1] if line.endswith("\r") else line for line in lines]


def text_file_pool(path: str | Path, language: str, max_size: int | None = None, seed: int = 0) -> TextPool:
    """A pool read from a UTF-8 file with one sentence per line.

    Blank lines are skipped; an entry's id is its 1-based line number, so an id
    points back into the file. Texts are stripped of surrounding whitespace.
    ``max_size`` entries are drawn with ``seed`` (kept in file order).
    """
    _check_language(language, str(path))
    name, lines = _read_lines(path, language)
    ids, texts = [], []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if text:
            ids.append(str(lineno))
            texts.append(text)
    if not texts:
        raise DataError(f"{name}: no sentences (empty or blank lines only; pool for language '{language}')")
    return TextPool(language, tuple(ids), tuple(texts), name).subsample(max_size, seed)


def parallel_file_pool(path: str | Path, language: str, max_size: int | None = None, seed: int = 0) -> ParallelPool:
    """Translation pairs read from a UTF-8 file in Efimov et al.'s format, one pair a line:

        target-language sentence ||| English sentence

    Exactly one ``" ||| "`` separates the two sides and neither side may be
    empty; any other non-blank line is an error naming ``file:line``. Blank
    lines are skipped; ids are 1-based line numbers.
    """
    _check_language(language, str(path))
    name, lines = _read_lines(path, language)
    ids, target, english = [], [], []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno} (pool for language '{language}')"
        if line.count("|||") != 1 or line.count(PARALLEL_SEPARATOR) != 1:
            raise DataError(
                f"{where}: expected exactly one {PARALLEL_SEPARATOR!r} separating 'target ||| English', "
                f"found {line.count('|||')} '|||' in {line[:80]!r}"
            )
        tgt, eng = (side.strip() for side in line.split(PARALLEL_SEPARATOR))
        if not tgt or not eng:
            side = "target" if not tgt else "English"
            raise DataError(f"{where}: the {side} side is empty in {line[:80]!r}")
        ids.append(str(lineno))
        target.append(tgt)
        english.append(eng)
    if not ids:
        raise DataError(f"{name}: no 'target ||| English' pairs (empty or blank lines only; pool for language '{language}')")
    return ParallelPool(language, tuple(ids), tuple(target), tuple(english), name).subsample(max_size, seed)


# ---------------------------------------------------------------- the hub


def hub_text_pool(
    dataset: str,
    config: str | None,
    split: str,
    column: str,
    language: str,
    max_size: int | None = None,
    seed: int = 0,
) -> TextPool:
    """A pool from one text column of a Hugging Face dataset (``datasets.load_dataset``).

    The row index is the id (counted before blank rows are dropped, so it points
    back into the table); ``max_size`` rows are drawn with ``seed`` among the
    non-blank ones. The whole column is read: use a split slice such as
    ``"train[:100000]"`` for very large corpora.
    """
    import datasets  # slow to import; file pools never pay for it

    where = f"hub dataset '{dataset}'" + (f" config '{config}'" if config else "") + f" split '{split}' (pool for language '{language}')"
    _check_language(language, where)
    try:
        if config is None:
            ds = datasets.load_dataset(dataset, split=split)
        else:
            ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as err:  # network, auth, unknown config: all mean "no data"
        raise DataError(f"could not load {where} ({type(err).__name__}: {err}); {OFFLINE_HINT}, or use a file pool") from err
    have = list(getattr(ds, "column_names", None) or [])
    if column not in have:
        raise DataError(f"{where}: no column {column!r}; it has {have}")
    ids, texts = [], []
    for row, value in enumerate(ds.select_columns([column]).to_dict()[column]):
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"{where}: row {row}: column {column!r} holds {type(value).__name__}, expected text")
        text = value.strip()
        if text:
            ids.append(str(row))
            texts.append(text)
    if not texts:
        raise DataError(f"{where}: column {column!r} has no non-blank text")
    source = f"hub:{dataset}/{config or ''}/{split}:{column}"
    return TextPool(language, tuple(ids), tuple(texts), source).subsample(max_size, seed)


# ---------------------------------------------------------------- benchmark splits


def id_order(ids: Iterable[str]) -> list[str]:
    """Ids sorted as the benchmarks number them: numerically where an id is an
    integer (so "10" follows "9"), other ids after those, as text."""

    def key(id_: str) -> tuple[int, int, str]:
        try:
            return (0, int(id_), id_)
        except ValueError:
            return (1, 0, id_)

    return sorted(ids, key=key)


def first_ids(data: PairDataset, n: int) -> tuple[str, ...]:
    """The first ``n`` ids of ``data`` in id order (see :func:`id_order`)."""
    if n < 0:
        raise ValueError(f"first_ids: n must be >= 0, got {n}")
    if n > len(data):
        raise DataError(f"{data.task}/{data.language}/{data.split}: asked for the first {n} examples, it has {len(data)}")
    return tuple(id_order(data.ids)[:n])


def skip_first(data: PairDataset, n: int) -> PairDataset:
    """``data`` without its first ``n`` examples in id order (what ``DataConfig.eval_skip_first``
    means); the rows left keep their order. Those first ``n`` are the ones
    :func:`benchmark_pools` takes with ``take_first=n``.

    Apply it before any subsampling so that the cap draws from the rows left.
    Skipping everything is an error: there would be nothing to evaluate.
    """
    if n == 0:
        return data
    skipped = set(first_ids(data, n))
    if len(skipped) >= len(data):
        raise DataError(
            f"{data.task}/{data.language}/{data.split}: skipping the first {n} of {len(data)} examples leaves none to evaluate"
        )
    return data.select_ids([id_ for id_ in data.ids if id_ not in skipped])


def eval_ids_after(source: DataSource, task: str, split: str = "validation", take_first: int = 0) -> set[str]:
    """The ids of ``task``'s ``split`` left for evaluation once the first ``take_first``
    (in id order) went into pools; the same in every language (ids align translations)."""
    return set(skip_first(source.load_eval(task, "en", split), take_first).ids)


def benchmark_pools(
    source: DataSource,
    task: str,
    languages: Sequence[str],
    split: str = "validation",
    *,
    take_first: int,
    max_size: int | None = None,
    seed: int = 0,
) -> dict[str, ParallelPool]:
    """Per language, a pool of translation pairs cut from the first ``take_first``
    examples (in id order, :func:`first_ids`) of a benchmark's evaluation split.

    Each example gives up to two entries, its first and second text (premise and
    hypothesis, or sentence1 and sentence2), with ids ``"{id}:a"`` and ``"{id}:b"``;
    the English side of an entry is the same text of the English example with the
    same id (the benchmarks' translation). A target text already in the pool
    (compared by :func:`normalize_text`) is left out, so each of XNLI's premises,
    shared by ids 3k, 3k+1, 3k+2, is there once (as ``"3k:a"``); blank texts are
    left out too. ``max_size`` entries are then drawn with ``seed`` per language.

    Labels are not kept: the pool is unlabeled text. ``source`` of each pool is
    ``"{task}/{split}"``, which :func:`check_no_leakage` reads; evaluate on
    ``skip_first(eval_set, take_first)``.
    """
    bench = get_benchmark(task)
    if take_first < 1:
        raise ValueError(f"benchmark_pools: take_first must be >= 1, got {take_first}")
    if isinstance(languages, str):
        languages = [languages]
    english = source.load_eval(task, "en", split)
    ids = first_ids(english, take_first)
    english = english.select_ids(ids)
    pools: dict[str, ParallelPool] = {}
    for lang in dict.fromkeys(languages):
        bench.check_language(lang)
        target = english if lang == "en" else source.load_eval(task, lang, split).select_ids(ids)
        seen: set[str] = set()
        out_ids, out_tgt, out_eng = [], [], []
        for i, id_ in enumerate(ids):
            for suffix, tgt, eng in (("a", target.text_a[i], english.text_a[i]), ("b", target.text_b[i], english.text_b[i])):
                key = normalize_text(tgt)
                if not key or key in seen:
                    continue
                seen.add(key)
                out_ids.append(f"{id_}:{suffix}")
                out_tgt.append(tgt)
                out_eng.append(eng)
        pool = ParallelPool(lang, tuple(out_ids), tuple(out_tgt), tuple(out_eng), f"{task}/{split}")
        pools[lang] = pool.subsample(max_size, seed)
    return pools


# ---------------------------------------------------------------- leakage


def _pool_task_split(pool: Pool) -> tuple[str, str] | None:
    """(task, split) of a pool cut from a benchmark, else None."""
    task, sep, split = pool.source.partition("/")
    return (task, split) if sep and task in BENCHMARKS and "/" not in split else None


def _example_id(entry_id: str) -> str:
    """The benchmark id of a pool entry id ``"{id}:a"``."""
    return entry_id.rsplit(":", 1)[0]


def check_no_leakage(
    pools: Mapping[str, Pool],
    eval_sets: Mapping[str, Mapping[str, PairDataset]],
    check_english: bool = True,
) -> None:
    """Raise :class:`LeakageError` if a pool shares an example with an evaluation set.

    ``pools``: language -> pool (any key; the pool's own ``language`` is used);
    ``eval_sets``: task -> language -> evaluation set, as from ``load_eval_sets``.

    Two checks:

    * ids: a pool cut from a benchmark (``source`` ``"{task}/{split}"``) must not
      hold an example id of that task and split evaluated in *any* language: the
      same id is the same example translated, and the pool's English side is
      that example's English text;
    * texts: no pool text (compared by :func:`normalize_text`) may be a premise /
      hypothesis (or sentence1 / sentence2) of an evaluation set of the same
      language, in any task. A ``ParallelPool``'s English side is also compared
      with the English evaluation sets unless ``check_english=False``.

    The message names the pool's language, the task, and one shared id or text.
    """
    for key, pool in pools.items():
        lang = pool.language
        task_split = _pool_task_split(pool)
        if task_split is not None:
            task, split = task_split
            pool_ids = {_example_id(i) for i in pool.ids}
            for eval_lang, data in eval_sets.get(task, {}).items():
                if data.split != split:
                    continue
                shared = [id_ for id_ in data.ids if id_ in pool_ids]
                if shared:
                    raise LeakageError(
                        f"pool {key!r} (language '{lang}', from {pool.source}) shares {len(shared)} example id(s) with "
                        f"the evaluation set of task '{task}', language '{eval_lang}', split '{split}', e.g. id "
                        f"{id_order(shared)[0]!r}; evaluate on skip_first(eval_set, take_first) "
                        f"(data.eval_skip_first={{'{task}': <take_first>}})"
                    )
        sides: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        if isinstance(pool, ParallelPool):
            sides.append((lang, pool.ids, pool.target))
            if check_english and lang != "en":
                sides.append(("en", pool.ids, pool.english))
        else:
            sides.append((lang, pool.ids, pool.texts))
        for side_lang, ids, texts in sides:
            index: dict[str, str] = {}
            for id_, text in zip(ids, texts):
                index.setdefault(normalize_text(text), id_)
            index.pop("", None)
            for task, by_lang in eval_sets.items():
                data = by_lang.get(side_lang)
                if data is None:
                    continue
                columns = get_benchmark(task).text_columns if task in BENCHMARKS else ("text_a", "text_b")
                for column, texts_ in zip(columns, (data.text_a, data.text_b)):
                    for eval_id, text in zip(data.ids, texts_):
                        hit = index.get(normalize_text(text))
                        if hit is not None:
                            side = "" if side_lang == lang else " (its English side)"
                            raise LeakageError(
                                f"pool {key!r} (language '{lang}', from {pool.source}){side} shares text with the "
                                f"evaluation set of task '{task}', language '{side_lang}', split '{data.split}': pool "
                                f"entry {hit!r} is the {column} of example id {eval_id!r}: {text[:100]!r}"
                            )
