"""Where benchmark data comes from: a local copy (``LocalSource``) or the hub.

Both return ``PairDataset``s with the same ids, so code above this module does
not know which one it read. ``open_source`` picks: an explicit directory, else
``$XLING_DATA_DIR``, else the Hugging Face hub.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from xling_ray.data.benchmarks import EVAL_SPLITS, Benchmark, DataError, HubSpec, get_benchmark

OFFLINE_HINT = "to work offline, pass --data-dir DIR or set XLING_DATA_DIR to a local copy laid out like shared/data"


@dataclass(frozen=True, repr=False)
class PairDataset:
    """Sentence pairs of one task, language and split; row i is (ids[i], text_a[i], text_b[i], labels[i])."""

    task: str
    language: str
    split: str
    ids: tuple[str, ...]
    text_a: tuple[str, ...]
    text_b: tuple[str, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.text_a) == len(self.text_b) == len(self.labels) == n):
            raise DataError(
                f"{self.task}/{self.language}/{self.split}: columns differ in length "
                f"(ids {n}, text_a {len(self.text_a)}, text_b {len(self.text_b)}, labels {len(self.labels)})"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:  # the default would print every sentence
        return f"PairDataset(task={self.task!r}, language={self.language!r}, split={self.split!r}, n={len(self)})"

    def _take(self, rows: list[int]) -> PairDataset:
        return PairDataset(
            self.task,
            self.language,
            self.split,
            tuple(self.ids[i] for i in rows),
            tuple(self.text_a[i] for i in rows),
            tuple(self.text_b[i] for i in rows),
            tuple(self.labels[i] for i in rows),
        )

    def subsample(self, n: int, seed: int) -> PairDataset:
        """``n`` rows drawn with ``seed``, in their original order; all of them if ``n >= len``."""
        if n < 0:
            raise ValueError(f"subsample: n must be >= 0, got {n}")
        if n >= len(self):
            return self
        # A private Random: the draw depends on the seed only, not on global state.
        rows = sorted(random.Random(seed).sample(range(len(self)), n))
        return self._take(rows)

    def select_ids(self, ids: tuple[str, ...] | list[str]) -> PairDataset:
        """The rows with these ids, in this order (to align translations with English)."""
        if tuple(ids) == self.ids:
            return self
        index: dict[str, int] = {}
        for i, id_ in enumerate(self.ids):
            index.setdefault(id_, i)
        missing = [id_ for id_ in ids if id_ not in index]
        if missing:
            raise DataError(
                f"{self.task}/{self.language}/{self.split}: {len(missing)} id(s) of the English set are missing "
                f"in language '{self.language}' (e.g. {missing[:5]}); the languages of a task must be parallel"
            )
        return self._take([index[id_] for id_ in ids])


@runtime_checkable
class DataSource(Protocol):
    """Anything that can hand out evaluation and English training sets."""

    def load_eval(self, task: str, language: str, split: str = "validation") -> PairDataset: ...

    def load_train(self, task: str) -> PairDataset: ...


def _check_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise DataError(f"unknown evaluation split '{split}'; use one of: {', '.join(EVAL_SPLITS)}")


# ---------------------------------------------------------------- local files

_Table = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[int, ...]]


@functools.lru_cache(maxsize=64)
def _parse_tsv(path: str, mtime_ns: int, size: int, columns: tuple[str, str, str, str], num_labels: int) -> _Table:
    """Parse one TSV into (ids, text_a, text_b, labels); cached since many trials read the same files.

    ``mtime_ns`` and ``size`` are only in the cache key, so a rewritten file is read again.
    """
    # newline="" and split("\n"): no quoting and no universal newlines, and
    # str.splitlines would also break lines at \x1c, \u2028 and other text characters.
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        raise DataError(f"{path}: empty file, expected a header line with columns {list(columns)}")
    header = lines[0].split("\t")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: line 1 (header): missing column(s) {missing}; header has {header}")
    pos = [header.index(c) for c in columns]
    width = len(header)
    ids: list[str] = []
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[int] = []
    seen: dict[str, int] = {}
    valid_labels = {str(i): i for i in range(num_labels)}  # exact strings: "1.0", " 1", "-1" are errors
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != width:
            raise DataError(f"{path}: line {lineno}: {len(fields)} fields, header has {width} (a tab inside a text?)")
        id_, a, b, raw_label = (fields[p] for p in pos)
        label = valid_labels.get(raw_label)
        if label is None:
            raise DataError(f"{path}: line {lineno}: column 'label' is {raw_label!r}, expected an integer in 0..{num_labels - 1}")
        if id_ in seen:
            # Ids align translations across languages, so they must be unique.
            raise DataError(f"{path}: line {lineno}: column 'id' {id_!r} repeats line {seen[id_]}")
        seen[id_] = lineno
        ids.append(id_)
        text_a.append(a)
        text_b.append(b)
        labels.append(label)
    if not ids:
        raise DataError(f"{path}: no rows after the header")
    return tuple(ids), tuple(text_a), tuple(text_b), tuple(labels)


class LocalSource:
    """Reads a directory laid out like shared/data (``xnli/{split}-{lang}.tsv``, ``train/mnli-en.tsv``, ...)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"data directory {str(self.root)!r} does not exist or is not a directory")

    def __repr__(self) -> str:
        return f"LocalSource({str(self.root)!r})"

    def _read(self, bench: Benchmark, rel: str, language: str, split: str) -> PairDataset:
        path = self.root / rel
        where = f"task '{bench.name}', language '{language}', split '{split}'"
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found ({where}); expected {rel} under {self.root}") from None
        columns = ("id", *bench.text_columns, "label")
        try:
            ids, a, b, labels = _parse_tsv(str(path), st.st_mtime_ns, st.st_size, columns, bench.num_labels)
        except DataError as err:
            raise DataError(f"{err} ({where})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read ({where}): {err}") from None
        return PairDataset(bench.name, language, split, ids, a, b, labels)

    def load_eval(self, task: str, language: str, split: str = "validation") -> PairDataset:
        bench = get_benchmark(task)
        bench.check_language(language)
        _check_split(split)
        return self._read(bench, bench.eval_file_for(language, split), language, split)

    def load_train(self, task: str) -> PairDataset:
        bench = get_benchmark(task)
        return self._read(bench, bench.train_file, "en", "train")


# ---------------------------------------------------------------- the hub


@functools.lru_cache(maxsize=64)
def _load_hub(spec: HubSpec, task: str, language: str, split: str, num_labels: int) -> PairDataset:
    import datasets  # slow to import; LocalSource users never pay for it

    config = spec.config_for(language)
    hub_split = spec.split_for(split)
    where = f"'{spec.path}'" + (f" config '{config}'" if config else "") + f" split '{hub_split}'"
    try:
        if config is None:
            ds = datasets.load_dataset(spec.path, split=hub_split)
        else:
            ds = datasets.load_dataset(spec.path, config, split=hub_split)
    except Exception as err:  # network, auth, unknown config: all mean "no data"
        raise DataError(f"could not load {where} from the Hugging Face hub ({type(err).__name__}: {err}); {OFFLINE_HINT}") from err

    needed = [spec.text_a, spec.text_b, spec.label] + ([spec.id_column] if spec.id_column else [])
    have = list(getattr(ds, "column_names", None) or [])
    missing = [c for c in needed if c not in have]
    if missing:
        raise DataError(f"hub dataset {where}: missing column(s) {missing}; it has {have}")
    cols = ds.select_columns(needed).to_dict()  # columnar via Arrow: fast even for MultiNLI's 393k rows

    # Without an id column the row index is the id, counted before filtering so it matches the local files.
    raw_ids = cols[spec.id_column] if spec.id_column else range(len(cols[spec.label]))
    ids: list[str] = []
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[int] = []
    for row, (id_, a, b, label) in enumerate(zip(raw_ids, cols[spec.text_a], cols[spec.text_b], cols[spec.label])):
        if label == -1 and spec.drop_unlabelled:
            continue
        if label is None or not 0 <= int(label) < num_labels:
            raise DataError(f"hub dataset {where}: row {row}: column '{spec.label}' is {label!r}, expected 0..{num_labels - 1}")
        ids.append(str(id_))
        text_a.append("" if a is None else str(a))
        text_b.append("" if b is None else str(b))
        labels.append(int(label))
    if not ids:
        raise DataError(f"hub dataset {where}: no labelled rows")
    return PairDataset(task, language, split, tuple(ids), tuple(text_a), tuple(text_b), tuple(labels))


class HubSource:
    """Reads the benchmarks with ``datasets.load_dataset`` (needs the hub or its local cache)."""

    def __repr__(self) -> str:
        return "HubSource()"

    def load_eval(self, task: str, language: str, split: str = "validation") -> PairDataset:
        bench = get_benchmark(task)
        bench.check_language(language)
        _check_split(split)
        return _load_hub(bench.hub_eval, bench.name, language, split, bench.num_labels)

    def load_train(self, task: str) -> PairDataset:
        bench = get_benchmark(task)
        return _load_hub(bench.hub_train, bench.name, "en", "train", bench.num_labels)


def open_source(data_dir: str | os.PathLike[str] | None = None) -> DataSource:
    """``data_dir``, else ``$XLING_DATA_DIR``, else the Hugging Face hub."""
    root = data_dir or os.environ.get("XLING_DATA_DIR") or None  # an empty variable counts as unset
    return LocalSource(root) if root else HubSource()


def clear_caches() -> None:
    """Forget parsed files and hub tables (tests; long-lived processes after data changes)."""
    _parse_tsv.cache_clear()
    _load_hub.cache_clear()
