"""Words of a sentence and the token positions of each word (subword spans).

A word is a whitespace piece of the sentence (``text.split()``), as in Pharaoh files; a
sentence is tokenised word by word, so the tokenizer's ``word_ids()`` are those indices.
:func:`word_vectors` turns a word's subword vectors into one vector.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Sequence

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

WordMode = Literal["mean", "first", "last"]
Alignment = list[tuple[int, int]]

_SENTENCEPIECE_SPACE = "\u2581"  # "▁", SentencePiece's word-start mark


def split_words(text: str) -> list[str]:
    """The words of a sentence: its whitespace-separated pieces, as in the
    Pharaoh files of fast_align and awesome-align (whose inputs are tokenised
    text, e.g. Moses-tokenised ``Don 't .``).

    >>> split_words("Die Katze  schläft .")
    ['Die', 'Katze', 'schläft', '.']
    """
    return text.split()


def _require_fast(tokenizer: Any, what: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{what}: needs a fast (Rust-backed) tokenizer for word_ids(); got {type(tokenizer).__name__}. "
            "Load it with AutoTokenizer (use_fast=True, the default)."
        )


def encode_words(tokenizer: "PreTrainedTokenizerBase", sentences: Sequence[Sequence[str]], max_length: int):
    """Tokenise pre-split sentences into one padded batch (a ``BatchEncoding``
    of (B, T) tensors that keeps ``word_ids()``); words past ``max_length``
    tokens are cut."""
    _require_fast(tokenizer, "encode_words")
    return tokenizer(
        [list(words) for words in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )


def drop_cut_words(
    tokenizer: "PreTrainedTokenizerBase",
    spans: list[list[list[int]]],
    sentences: Sequence[Sequence[str]],
    encoding: Any,
    max_length: int,
) -> list[list[list[int]]]:
    """Empty the span of a word that truncation cut in the middle (in place,
    and returned): only the last kept word of a row that fills ``max_length``
    can be cut, and it is if the word alone has more tokens than its span, so
    no loss or alignment reads a part of a word as the word."""
    lengths = encoding["attention_mask"].sum(1).tolist()
    for b, length in enumerate(lengths):
        if length < max_length or not spans[b]:
            continue
        last = len(spans[b]) - 1
        whole = len(tokenizer(sentences[b][last], add_special_tokens=False)["input_ids"])
        if len(spans[b][last]) < whole:
            spans[b][last] = []
    return spans


def word_spans(
    tokenizer: "PreTrainedTokenizerBase",
    encoding: Any,
    include_special: bool = False,
) -> list[list[list[int]]]:
    """Token positions of each word, for each sentence of a batch:
    ``spans[b][w]`` lists the positions of the subwords of word w of sentence b.

    - ``encoding``: the ``BatchEncoding`` of a fast tokenizer (preferred: its
      ``word_ids()`` are exact for any tokenizer, and with
      ``is_split_into_words`` they are the indices of the given words), or bare
      ``input_ids`` (a (B, T) / (T,) tensor or lists), grouped by the
      SentencePiece rule: a piece starting with "▁" starts a word, any other
      piece continues the current one (XLM-R vocabularies only; a lone "▁"
      followed by "猫" is one word).
    - ``include_special``: if False, special tokens (<s>, </s>, [CLS], [SEP]) and
      padding belong to no word and ``spans[b][w]`` is indexed by word index
      (a word that produced no token gets ``[]``; words truncated away at the
      end are absent). If True, every unit in
      token order, each special token its own one-token "word": the indices
      are then shifted by the leading special token and no longer match the
      text's words, so use it for display, not with alignment indices.

    Padding (``attention_mask`` 0, or the pad id for bare ids) is never part of a span.

    With the XLM-R vocabulary, ``"Hello world, unbelievable"`` is
    ``<s> ▁Hello ▁world , ▁un beli ev able </s>`` and gives
    ``[[[1], [2, 3], [4, 5, 6, 7]]]`` ("world," is one whitespace word), or
    ``[[[0], [1], [2, 3], [4, 5, 6, 7], [8]]]`` with ``include_special``.
    """
    if hasattr(encoding, "word_ids") and getattr(encoding, "encodings", None):
        mask = encoding.get("attention_mask")
        if mask is not None:
            mask = mask.tolist() if isinstance(mask, torch.Tensor) else list(mask)
            if mask and not isinstance(mask[0], (list, tuple)):
                mask = [mask]  # an unbatched encoding: tokenizer("one sentence")
        out = []
        for b in range(len(encoding.encodings)):
            wids = encoding.word_ids(b)
            real = [1] * len(wids) if mask is None else [int(m) for m in mask[b]]
            out.append(_spans_from_word_ids(wids, real, include_special))
        return out
    ids = encoding["input_ids"] if isinstance(encoding, dict) or hasattr(encoding, "keys") else encoding
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if ids and not isinstance(ids[0], (list, tuple)):
        ids = [ids]
    return [_spans_from_pieces(tokenizer, row, include_special) for row in ids]


def _spans_from_word_ids(wids: list[int | None], real: list[int], include_special: bool) -> list[list[int]]:
    if include_special:
        units: list[list[int]] = []
        current = None
        for pos, (wid, r) in enumerate(zip(wids, real)):
            if not r:
                continue
            if wid is None:
                units.append([pos])
                current = None
            elif wid != current:
                units.append([pos])
                current = wid
            else:
                units[-1].append(pos)
        return units
    n_words = 1 + max((w for w, r in zip(wids, real) if w is not None and r), default=-1)
    spans: list[list[int]] = [[] for _ in range(n_words)]
    for pos, (wid, r) in enumerate(zip(wids, real)):
        if wid is not None and r:
            spans[wid].append(pos)
    return spans


def _spans_from_pieces(tokenizer: Any, ids: list[int], include_special: bool) -> list[list[int]]:
    # <unk> stands for a piece of a word (e.g. a character out of the vocabulary), not a sentence mark.
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    pieces = tokenizer.convert_ids_to_tokens(ids)
    units: list[list[int]] = []
    in_word = False
    for pos, (tid, piece) in enumerate(zip(ids, pieces)):
        if tid == tokenizer.pad_token_id:
            continue
        if tid in special:
            if include_special:
                units.append([pos])
            in_word = False
        elif piece.startswith(_SENTENCEPIECE_SPACE) or not in_word:
            if not piece.startswith(_SENTENCEPIECE_SPACE):
                raise ValueError(
                    f"word_spans: piece {piece!r} at position {pos} starts a sentence without the SentencePiece "
                    f"'{_SENTENCEPIECE_SPACE}' mark, so words cannot be read from the pieces of this tokenizer; "
                    "pass the BatchEncoding of a fast tokenizer instead (its word_ids() work for any tokenizer)"
                )
            units.append([pos])
            in_word = True
        else:
            units[-1].append(pos)
    return units


def _encode_with_spans(
    tokenizer: "PreTrainedTokenizerBase", sentences: Sequence[Sequence[str]], max_length: int
) -> tuple[Any, list[list[list[int]]]]:
    encoding = encode_words(tokenizer, sentences, max_length)
    return encoding, drop_cut_words(tokenizer, word_spans(tokenizer, encoding), sentences, encoding, max_length)


def word_vectors(hidden: torch.Tensor, spans: Sequence[Sequence[int]], mode: WordMode = "mean") -> torch.Tensor:
    """One vector per word from its subword vectors:

        v_w = mean_{k in span(w)} h_k   ("mean")
        v_w = h_{first(span(w))}        ("first")
        v_w = h_{last(span(w))}         ("last")

    - ``hidden``: (T, d) token vectors of one sentence; ``spans``: n_words lists
      of token positions (see :func:`word_spans`), each non-empty.

    Returns (n_words, d), differentiable in ``hidden``.

    >>> h = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    >>> word_vectors(h, [[0], [1, 2]], "mean").tolist()
    [[0.0, 1.0], [3.0, 4.0]]
    >>> word_vectors(h, [[0], [1, 2]], "first").tolist()
    [[0.0, 1.0], [2.0, 3.0]]
    """
    if hidden.dim() != 2:
        raise ValueError(f"word_vectors: hidden must be (T, d), got {tuple(hidden.shape)}")
    return _span_vectors(hidden.unsqueeze(0), [0] * len(spans), spans, mode)


def _span_vectors(
    hidden: torch.Tensor, rows: Sequence[int], spans: Sequence[Sequence[int]], mode: WordMode
) -> torch.Tensor:
    """Vectors of ``spans[p]`` in sentence ``rows[p]`` of ``hidden`` (B, T, d): (P, d)."""
    if mode not in ("mean", "first", "last"):
        raise ValueError(f"word vector mode must be 'mean', 'first' or 'last', got {mode!r}")
    if not spans:
        return hidden.new_zeros((0, hidden.shape[-1]))
    for p, span in enumerate(spans):
        if not span:
            raise ValueError(f"word_vectors: span {p} is empty (a word with no token); drop it first")
    if mode != "mean":
        pos = [span[0] if mode == "first" else span[-1] for span in spans]
        return hidden[torch.as_tensor(rows, device=hidden.device), torch.as_tensor(pos, device=hidden.device)]
    width = max(len(span) for span in spans)
    index = torch.zeros(len(spans), width, dtype=torch.long)
    weight = torch.zeros(len(spans), width, dtype=hidden.dtype)
    for p, span in enumerate(spans):
        index[p, : len(span)] = torch.as_tensor(span)
        weight[p, : len(span)] = 1.0 / len(span)
    index, weight = index.to(hidden.device), weight.to(hidden.device)
    picked = hidden[torch.as_tensor(rows, device=hidden.device)[:, None], index]  # (P, width, d)
    return (picked * weight[..., None]).sum(1)
