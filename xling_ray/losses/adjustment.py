"""Cross-lingual adjustment: pull the contextual vectors of aligned words of
parallel sentences together, while keeping English where it was.

Cao, Kitaev & Klein (ICLR 2020, "Multilingual alignment of contextual word
representations") fine-tune a multilingual encoder ``f`` on word-aligned
parallel sentences (target language t, English s) with

    L = L_align + lambda * L_reg
    L_align = sum_{(t, s)} sum_{(i, j) in a(t, s)} ||f(t)_i - f(s)_j||^2
    L_reg   = sum_{s} sum_{k in s} ||f(s)_k - f0(s)_k||^2

where ``a(t, s)`` are the aligned word pairs (i a word of t, j a word of s),
``f(x)_i`` the contextual vector of word i of sentence x, and ``f0`` the
encoder before adjustment (frozen). Efimov et al. (ECIR 2023, "The impact of
cross-lingual adjustment of contextual word representations on zero-shot
transfer") apply the same procedure to mBERT and XLM-R before task
fine-tuning. Here both sums are means (over aligned pairs, over English
tokens), so ``lambda`` (``base_rate``) does not depend on batch or sentence
length.

The pieces, in the order a run uses them:

1. *Words* are the whitespace words of a sentence, ``text.split()``; a word's
   index in that list is its index everywhere here (Pharaoh files,
   alignments, spans). Sentences are tokenised word by word
   (``is_split_into_words=True``), so the tokenizer's ``word_ids()`` are those
   indices whatever its own pre-tokenisation (a BERT tokenizer would split
   punctuation off a raw string; XLM-R's Metaspace splits on spaces only).
2. *Alignments* come from a file (:func:`read_pharaoh`, e.g. fast_align or
   awesome-align output) or from the frozen encoder itself
   (:func:`align_corpus`, SimAlign's "argmax"), computed once before training
   and cached with :func:`write_pharaoh`.
3. *Each step*: an :class:`AlignedBatch` from :class:`AlignedCollator` (or
   :func:`build_aligned_batch`), then :func:`adjustment_objective`, or by hand::

       h_t = encoder_hidden(model, batch.target)
       h_s = encoder_hidden(model, batch.english)
       with torch.no_grad():
           h_s0 = encoder_hidden(f0, batch.english)        # f0 = frozen_copy(model)
       loss = adjustment_loss(alignment_loss(h_t, h_s, batch),
                              regularization_loss(h_s, h_s0, batch.english["attention_mask"]),
                              base_rate)
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

WordMode = Literal["mean", "first", "last"]
SubwordPooling = Literal["mean", "max", "any"]
Alignment = list[tuple[int, int]]

#: The keys of a tokenizer's output that the encoder reads.
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SENTENCEPIECE_SPACE = "\u2581"  # "▁", SentencePiece's word-start mark


# --------------------------------------------------------------------------- words


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


# --------------------------------------------------------------------------- alignments from the encoder


def mutual_argmax(similarity: torch.Tensor) -> Alignment:
    """SimAlign's "argmax" alignment (Jalili Sabet et al., Findings of EMNLP
    2020, "SimAlign: high quality word alignments without parallel training
    data using static and contextualized embeddings"): the pairs

        A = {(i, j) : j = argmax_j' S[i, j']  and  i = argmax_i' S[i', j]}

    - ``similarity``: (n_t, n_s) scores ``S``, rows target words, columns English words.

    Each row and each column is in at most one pair, so ``A`` is a partial
    one-to-one matching of high precision. Ties go to the lowest index
    (``torch.argmax``). Returns the pairs sorted by i.

    Row 0 prefers column 0, but column 0 prefers row 1, so only (1, 0) is kept:

    >>> mutual_argmax(torch.tensor([[0.9, 0.8], [0.95, 0.1]]))
    [(1, 0)]
    """
    if similarity.dim() != 2:
        raise ValueError(f"mutual_argmax: similarity must be (n_t, n_s), got {tuple(similarity.shape)}")
    if similarity.numel() == 0:
        return []
    row_best = similarity.argmax(dim=1)  # (n_t,)
    col_best = similarity.argmax(dim=0)  # (n_s,)
    mutual = col_best[row_best] == torch.arange(similarity.shape[0], device=similarity.device)
    rows = mutual.nonzero().flatten()
    return [(int(i), int(row_best[i])) for i in rows]


def default_alignment_layer(num_hidden_layers: int) -> int:
    """The hidden state SimAlign-style alignment reads by default: two thirds
    of the way up, ``round(2 L / 3)``. SimAlign found layer 8 of 12 best for
    mBERT (middle-to-upper layers align best; the top ones are specialised to
    the pre-training objective); this is 8 for any 12-layer encoder
    (the offline multilingual-e5-small too).

    >>> default_alignment_layer(12)
    8
    """
    return max(1, round(2 * num_hidden_layers / 3))


def encoder_hidden(model: torch.nn.Module, inputs: Any, layer: int = -1) -> torch.Tensor:
    """Token vectors (B, T, d) of ``model``'s encoder (``model.base_model``, so a
    sequence classifier and its bare encoder give the same) at hidden layer
    ``layer``: 0 the embeddings, k the output of layer k, -1 the last layer
    (``last_hidden_state``). Runs with the caller's grad mode and train/eval mode.

    A DDP wrapper is looked through (``model.module``), as the other extra
    passes of a step do: the gradients reach the same parameters and are
    all-reduced by the hooks of the step's pass through the wrapper."""
    model = getattr(model, "module", model)
    encoder = getattr(model, "base_model", model)
    kwargs = {k: inputs[k] for k in _MODEL_INPUTS if k in inputs}
    if layer == -1:
        return encoder(**kwargs).last_hidden_state
    hidden = encoder(**kwargs, output_hidden_states=True).hidden_states
    if not -len(hidden) <= layer < len(hidden):
        raise ValueError(
            f"hidden layer {layer} does not exist: the encoder has {len(hidden) - 1} layers "
            f"(use 0..{len(hidden) - 1}, or negative indices from the top)"
        )
    return hidden[layer]


def _word_similarity(
    t_vec: torch.Tensor, s_vec: torch.Tensor, t_spans: list[list[int]], s_spans: list[list[int]], pooling: str
) -> torch.Tensor:
    """(n_t_words, n_s_words) word similarity from subword cosines ``C[k, l]``:
    mean (or max) of ``C`` over the subword pairs of the two words."""
    cos = F.normalize(t_vec.float(), dim=-1) @ F.normalize(s_vec.float(), dim=-1).T
    reduce = (lambda x, dim: x.mean(dim)) if pooling == "mean" else (lambda x, dim: x.amax(dim))
    rows = torch.stack([reduce(cos[span], 0) for span in t_spans])  # (n_t_words, T_s)
    return torch.stack([reduce(rows[:, span], 1) for span in s_spans], dim=1)


def _align_one(
    t_hidden: torch.Tensor, s_hidden: torch.Tensor, t_spans: list[list[int]], s_spans: list[list[int]], pooling: str
) -> Alignment:
    t_words = [w for w, span in enumerate(t_spans) if span]
    s_words = [w for w, span in enumerate(s_spans) if span]
    if not t_words or not s_words:
        return []
    if pooling == "any":
        # SimAlign's default ("bpe" level): mutual argmax over subwords, then two
        # words are aligned if any of their subwords are.
        t_pos = [k for w in t_words for k in t_spans[w]]
        s_pos = [k for w in s_words for k in s_spans[w]]
        t_word_of = [w for w in t_words for _ in t_spans[w]]
        s_word_of = [w for w in s_words for _ in s_spans[w]]
        cos = F.normalize(t_hidden[t_pos].float(), dim=-1) @ F.normalize(s_hidden[s_pos].float(), dim=-1).T
        return sorted({(t_word_of[k], s_word_of[l]) for k, l in mutual_argmax(cos)})
    sim = _word_similarity(t_hidden, s_hidden, [t_spans[w] for w in t_words], [s_spans[w] for w in s_words], pooling)
    return [(t_words[i], s_words[j]) for i, j in mutual_argmax(sim)]


def align_corpus(
    model: torch.nn.Module,
    tokenizer: "PreTrainedTokenizerBase",
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 32,
    layer: int | None = None,
    subword_pooling: SubwordPooling = "mean",
    max_length: int = 256,
    device: torch.device | str | None = None,
) -> list[Alignment]:
    """Word alignments of parallel sentences read off a frozen multilingual
    encoder, without an external aligner (SimAlign "argmax", Jalili Sabet et
    al. 2020). For each pair (target t, English s):

        C[k, l] = cos(h_k(t), h_l(s))                       subword similarity at ``layer``
        S[i, j] = pool_{k in span_t(i), l in span_s(j)} C[k, l]   word similarity
        a(t, s) = mutual_argmax(S)

    - ``pairs``: (target sentence, English sentence); words are ``text.split()``.
    - ``layer``: hidden state to compare (0 embeddings, -1 last); None gives
      :func:`default_alignment_layer` (8 of 12).
    - ``subword_pooling``: "mean" of the subword-pair cosines, "max" of them, or
      "any": SimAlign's own default, mutual argmax between *subwords*, two words
      aligned if any of their subwords are (not one-to-one then). With "max" a
      sentence aligned with itself gives exactly the identity (a subword's
      cosine with itself is 1); "mean" lowers a long word's self-similarity
      (mean cosine among its own pieces) and favours short words.
    - ``device``: where the inputs go; default the device of ``model``, which
      is not moved. Sentences are batched ``batch_size`` at a time, sorted by
      length to save padding; words cut (wholly or in part) by ``max_length``
      tokens get no alignment.

    The encoder is run in eval mode under ``inference_mode`` and put back in
    its previous mode. Returns one list of (target word, English word) index
    pairs per sentence pair, in input order, as :func:`read_pharaoh` would.
    """
    if subword_pooling not in ("mean", "max", "any"):
        raise ValueError(f"subword_pooling must be 'mean', 'max' or 'any', got {subword_pooling!r}")
    if batch_size < 1:
        raise ValueError(f"align_corpus: batch_size must be >= 1, got {batch_size}")
    encoder = getattr(model, "base_model", model)
    if layer is None:
        layer = default_alignment_layer(encoder.config.num_hidden_layers)
    if device is None:
        device = next(encoder.parameters()).device
    words = [(split_words(t), split_words(s)) for t, s in pairs]
    order = sorted(range(len(words)), key=lambda k: max(len(words[k][0]), len(words[k][1])))
    out: list[Alignment] = [[] for _ in words]
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                enc_t, spans_t = _encode_with_spans(tokenizer, [words[k][0] for k in chunk], max_length)
                enc_s, spans_s = _encode_with_spans(tokenizer, [words[k][1] for k in chunk], max_length)
                h_t = encoder_hidden(encoder, {k: v.to(device) for k, v in enc_t.items()}, layer)
                h_s = encoder_hidden(encoder, {k: v.to(device) for k, v in enc_s.items()}, layer)
                for b, k in enumerate(chunk):
                    out[k] = _align_one(h_t[b], h_s[b], spans_t[b], spans_s[b], subword_pooling)
    finally:
        encoder.train(was_training)
    return out


def align_sentence_pair(
    model: torch.nn.Module,
    tokenizer: "PreTrainedTokenizerBase",
    target: str,
    english: str,
    layer: int | None = None,
    subword_pooling: SubwordPooling = "mean",
    max_length: int = 256,
    device: torch.device | str | None = None,
) -> Alignment:
    """The (target word, English word) index pairs of one sentence pair; see
    :func:`align_corpus` for the method and the arguments."""
    return align_corpus(
        model, tokenizer, [(target, english)], batch_size=1, layer=layer,
        subword_pooling=subword_pooling, max_length=max_length, device=device,
    )[0]


# --------------------------------------------------------------------------- Pharaoh files


def read_pharaoh(path: str | os.PathLike, n_pairs: int, english_first: bool = False) -> list[Alignment]:
    """Word alignments in Pharaoh format, one line per sentence pair:
    whitespace-separated ``i-j`` tokens, 0-based word indices (of
    ``text.split()``), i a word of the target sentence and j a word of the
    English one (fast_align run on ``target ||| english``). An empty line is a
    pair with no alignment. ``english_first=True`` reads files written the other
    way round (``english ||| target``) and swaps each pair.

    Only plain ``i-j`` is accepted (not gold-standard ``i?j`` or ``i-j-p``
    with a probability); duplicates are dropped, order kept.

    Raises ValueError naming the file and line for a malformed token, and when
    the file has not exactly ``n_pairs`` lines (the alignments would then be
    shifted against the sentences).
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if len(lines) != n_pairs:
        raise ValueError(
            f"{path}: {len(lines)} alignment lines for {n_pairs} sentence pairs; "
            "the file must have exactly one line per pair (an empty line for a pair with no alignment)"
        )
    out: list[Alignment] = []
    for lineno, line in enumerate(lines, start=1):
        seen: dict[tuple[int, int], None] = {}
        for token in line.strip().split():
            i, sep, j = token.partition("-")
            if not (sep and i.isdigit() and j.isdigit() and i.isascii() and j.isascii()):
                raise ValueError(
                    f"{path}, line {lineno}: malformed alignment {token!r}; expected 'i-j' with 0-based word indices"
                )
            pair = (int(j), int(i)) if english_first else (int(i), int(j))
            seen[pair] = None
        out.append(list(seen))
    return out


def write_pharaoh(path: str | os.PathLike, alignments: Iterable[Iterable[tuple[int, int]]]) -> None:
    """Write alignments (target word, English word) as :func:`read_pharaoh` reads them."""
    with open(path, "w", encoding="utf-8") as fh:
        for alignment in alignments:
            fh.write(" ".join(f"{i}-{j}" for i, j in alignment) + "\n")


# --------------------------------------------------------------------------- batches of aligned pairs


@dataclass
class AlignedBatch:
    """A padded batch of parallel sentences with their word alignments.

    - ``target`` / ``english``: tokenizer outputs, (B, T) / (B, S) tensors
      (``input_ids``, ``attention_mask``); feed them to :func:`encoder_hidden`.
    - ``target_spans[b][i]``: token positions of target word i of example b
      (``[]`` if truncation took all or part of it); likewise ``english_spans``.
    - ``alignments[b]``: the aligned (target word, English word) pairs of example
      b whose words both survived truncation.
    - ``target_special[b]`` / ``english_special[b]``: token positions of the
      special tokens (e.g. <s> and </s>), in order.
    - ``dropped``: aligned pairs lost to truncation in this batch.
    """

    target: dict[str, torch.Tensor]
    english: dict[str, torch.Tensor]
    target_spans: list[list[list[int]]]
    english_spans: list[list[list[int]]]
    alignments: list[Alignment]
    target_special: list[list[int]]
    english_special: list[list[int]]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.alignments)

    @property
    def n_aligned(self) -> int:
        return sum(len(a) for a in self.alignments)

    def to(self, device: torch.device | str) -> "AlignedBatch":
        return AlignedBatch(
            {k: v.to(device) for k, v in self.target.items()},
            {k: v.to(device) for k, v in self.english.items()},
            self.target_spans, self.english_spans, self.alignments,
            self.target_special, self.english_special, self.dropped,
        )


def _special_positions(encoding: Any) -> list[list[int]]:
    mask = encoding["attention_mask"]
    return [
        [pos for pos, wid in enumerate(encoding.word_ids(b)) if wid is None and int(mask[b, pos])]
        for b in range(len(encoding.encodings))
    ]


def build_aligned_batch(
    tokenizer: "PreTrainedTokenizerBase",
    pairs: Sequence[tuple[str, str]],
    alignments: Sequence[Iterable[tuple[int, int]]],
    max_length: int = 128,
) -> AlignedBatch:
    """Tokenise parallel sentences (target, English) word by word into padded
    tensors and attach their alignments (target word, English word).

    An alignment index past the sentence's word count is an error (the
    alignment file does not belong to these sentences); a pair one of whose
    words was cut, wholly or in part, by ``max_length`` is dropped and counted
    in ``dropped``.
    """
    if len(pairs) != len(alignments):
        raise ValueError(f"build_aligned_batch: {len(pairs)} sentence pairs but {len(alignments)} alignments")
    t_words = [split_words(t) for t, _ in pairs]
    s_words = [split_words(s) for _, s in pairs]
    enc_t, t_spans = _encode_with_spans(tokenizer, t_words, max_length)
    enc_s, s_spans = _encode_with_spans(tokenizer, s_words, max_length)
    kept: list[Alignment] = []
    dropped = 0
    for b, alignment in enumerate(alignments):
        row: Alignment = []
        for i, j in alignment:
            if not (0 <= i < len(t_words[b]) and 0 <= j < len(s_words[b])):
                raise ValueError(
                    f"build_aligned_batch: example {b} aligns {i}-{j} but has {len(t_words[b])} target and "
                    f"{len(s_words[b])} English words ({pairs[b][0][:60]!r} / {pairs[b][1][:60]!r}); "
                    "are the alignments in the order of the sentence pairs, target word first?"
                )
            if i < len(t_spans[b]) and t_spans[b][i] and j < len(s_spans[b]) and s_spans[b][j]:
                row.append((i, j))
            else:
                dropped += 1
        kept.append(row)
    keep = lambda enc: {k: v for k, v in enc.items() if k in _MODEL_INPUTS}  # noqa: E731
    return AlignedBatch(
        keep(enc_t), keep(enc_s), t_spans, s_spans, kept, _special_positions(enc_t), _special_positions(enc_s), dropped
    )


@dataclass
class AlignedCollator:
    """``collate_fn`` for a ``DataLoader`` over ``(target, english, alignment)`` items:

        loader = DataLoader(list(zip(targets, englishes, alignments)), batch_size=16,
                            shuffle=True, collate_fn=AlignedCollator(tokenizer, max_length=128))
    """

    tokenizer: Any
    max_length: int = 128

    def __call__(self, items: Sequence[tuple[str, str, Iterable[tuple[int, int]]]]) -> AlignedBatch:
        return build_aligned_batch(
            self.tokenizer, [(t, s) for t, s, _ in items], [a for _, _, a in items], self.max_length
        )


# --------------------------------------------------------------------------- losses


def _special_pairs(t_special: list[int], s_special: list[int]) -> list[tuple[int, int]]:
    if len(t_special) == len(s_special):
        return list(zip(t_special, s_special))
    # Unequal counts (e.g. a tokenizer adding a language tag): pair the ends only.
    return [(t_special[0], s_special[0]), (t_special[-1], s_special[-1])] if t_special and s_special else []


def alignment_loss(
    target_hidden: torch.Tensor,
    english_hidden: torch.Tensor,
    batch: AlignedBatch,
    mode: WordMode = "mean",
    include_special: bool = False,
) -> torch.Tensor:
    """Cao et al.'s (ICLR 2020) alignment term, as a mean:

        L_align = 1/|A| sum_{b} sum_{(i, j) in A_b} ||f(t_b)_i - f(s_b)_j||^2

    - ``target_hidden``: (B, T, d) encoder vectors of ``batch.target``;
      ``english_hidden``: (B, S, d) of ``batch.english`` (same model, same layer);
    - ``A_b = batch.alignments[b]``, ``|A|`` the number of pairs in the batch
      (each aligned pair weighs the same, so long sentences weigh more, as in
      the paper's sum); ``f(x)_i`` the vector of word i by :func:`word_vectors`
      with ``mode`` ("mean", "first" or "last" subword);
    - ``include_special``: the special tokens count as aligned pairs too
      (<s> with <s>, </s> with </s>; [CLS]/[SEP] for BERT), so the sentence
      vector a classifier reads from position 0 is pulled together as well.

    Squared distances are summed over the d hidden dims (not averaged), as in
    the paper. A batch with no aligned pair gives 0 (keeping the graph).
    The full objective is :func:`adjustment_loss` ``(L_align, L_reg, base_rate)``.

    Two one-word sentences whose vectors differ by (3, 4) give 25:

    >>> b = AlignedBatch({}, {}, [[[1]]], [[[1]]], [[(0, 0)]], [[0, 2]], [[0, 2]])
    >>> t = torch.zeros(1, 3, 2); s = torch.zeros(1, 3, 2); s[0, 1] = torch.tensor([3.0, 4.0])
    >>> alignment_loss(t, s, b).item()
    25.0
    >>> alignment_loss(t, s, b, include_special=True).item()  # plus two pairs at distance 0
    8.333333015441895
    """
    if target_hidden.dim() != 3 or english_hidden.dim() != 3:
        raise ValueError(
            f"alignment_loss: hidden states must be (B, T, d); got {tuple(target_hidden.shape)} "
            f"and {tuple(english_hidden.shape)}"
        )
    if target_hidden.shape[0] != len(batch) or english_hidden.shape[0] != len(batch):
        raise ValueError(
            f"alignment_loss: batch of {len(batch)} examples but hidden states for "
            f"{target_hidden.shape[0]} / {english_hidden.shape[0]}"
        )
    rows: list[int] = []
    t_spans: list[list[int]] = []
    s_spans: list[list[int]] = []
    for b, alignment in enumerate(batch.alignments):
        for i, j in alignment:
            rows.append(b)
            t_spans.append(batch.target_spans[b][i])
            s_spans.append(batch.english_spans[b][j])
        if include_special:
            for k, l in _special_pairs(batch.target_special[b], batch.english_special[b]):
                rows.append(b)
                t_spans.append([k])
                s_spans.append([l])
    if not rows:
        return (target_hidden.sum() + english_hidden.sum()) * 0.0
    t_vec = _span_vectors(target_hidden, rows, t_spans, mode)
    s_vec = _span_vectors(english_hidden, rows, s_spans, mode)
    return (t_vec.float() - s_vec.float()).pow(2).sum(-1).mean()


def regularization_loss(
    english_hidden: torch.Tensor, english_hidden_original: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Cao et al.'s (ICLR 2020) regularizer, as a mean: keep English where the
    original model put it,

        L_reg = 1/N sum_{b} sum_{k : m_bk = 1} ||f(s_b)_k - f0(s_b)_k||^2

    - ``english_hidden``: (B, S, d) vectors of the English side from the model
      being adjusted; ``english_hidden_original``: the same from ``f0``
      (:func:`frozen_copy`), computed by the caller under ``no_grad`` (detached
      here anyway);
    - ``attention_mask``: (B, S), 1 for real tokens (special tokens included),
      ``N`` their number. Squared distances summed over hidden dims.

    It is 0 at the start of adjustment only if both passes are deterministic:
    with dropout on (train mode) it also measures dropout noise.

    >>> h0 = torch.zeros(1, 3, 2); h = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [9.0, 9.0]]])
    >>> regularization_loss(h, h0, torch.tensor([[1, 1, 0]])).item()  # (2 + 4) / 2; padding ignored
    3.0
    """
    if english_hidden.shape != english_hidden_original.shape or english_hidden.dim() != 3:
        raise ValueError(
            f"regularization_loss: hidden states must both be (B, S, d); got {tuple(english_hidden.shape)} "
            f"and {tuple(english_hidden_original.shape)}"
        )
    mask = attention_mask.to(english_hidden.device, torch.float32)
    sq = (english_hidden.float() - english_hidden_original.detach().float()).pow(2).sum(-1)
    return (sq * mask).sum() / mask.sum().clamp_min(1.0)


def adjustment_loss(align: torch.Tensor, reg: torch.Tensor, base_rate: float) -> torch.Tensor:
    """Cao et al.'s objective ``L = L_align + base_rate * L_reg``: ``base_rate``
    (their lambda) trades moving the target language onto English against
    moving English away from what the pre-trained model (and so the English
    task head) expects.

    >>> adjustment_loss(torch.tensor(2.0), torch.tensor(3.0), base_rate=0.5).item()
    3.5
    """
    return align + base_rate * reg


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``f0``: a deep copy of ``model`` in eval mode with no trainable parameter,
    for :func:`regularization_loss`. Pass ``model.base_model`` to copy the
    encoder without the task head."""
    f0 = copy.deepcopy(model)
    f0.eval()
    f0.requires_grad_(False)
    return f0


class AdjustmentParts(NamedTuple):
    total: torch.Tensor
    align: torch.Tensor
    reg: torch.Tensor


def adjustment_objective(
    model: torch.nn.Module,
    original: torch.nn.Module,
    batch: AlignedBatch,
    base_rate: float,
    mode: WordMode = "mean",
    include_special: bool = False,
    layer: int = -1,
) -> AdjustmentParts:
    """One step's ``L_align + base_rate * L_reg`` on an :class:`AlignedBatch`
    already on the model's device: ``model`` on both sides, the frozen
    ``original`` (:func:`frozen_copy`) on the English side under ``no_grad``,
    all at hidden ``layer`` (-1: the last, as in Cao et al.). Three encoder
    passes; with ``base_rate == 0`` the frozen pass is skipped."""
    h_t = encoder_hidden(model, batch.target, layer)
    h_s = encoder_hidden(model, batch.english, layer)
    align = alignment_loss(h_t, h_s, batch, mode=mode, include_special=include_special)
    if base_rate == 0:
        reg = align.new_zeros(())
    else:
        with torch.no_grad():
            h_s0 = encoder_hidden(original, batch.english, layer)
        reg = regularization_loss(h_s, h_s0, batch.english["attention_mask"])
    return AdjustmentParts(adjustment_loss(align, reg, base_rate), align, reg)
