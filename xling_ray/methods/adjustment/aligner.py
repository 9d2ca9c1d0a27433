"""Word alignments read off a frozen multilingual encoder (SimAlign's "argmax",
Jalili Sabet et al., Findings of EMNLP 2020): no external aligner needed."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Sequence

import torch
import torch.nn.functional as F

from xling_ray.methods.adjustment.words import Alignment, _encode_with_spans, split_words
from xling_ray.models.encode import encoder_hidden, frozen_eval

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SubwordPooling = Literal["mean", "max", "any"]


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
    with frozen_eval(encoder):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            enc_t, spans_t = _encode_with_spans(tokenizer, [words[k][0] for k in chunk], max_length)
            enc_s, spans_s = _encode_with_spans(tokenizer, [words[k][1] for k in chunk], max_length)
            h_t = encoder_hidden(encoder, {k: v.to(device) for k, v in enc_t.items()}, layer)
            h_s = encoder_hidden(encoder, {k: v.to(device) for k, v in enc_s.items()}, layer)
            for b, k in enumerate(chunk):
                out[k] = _align_one(h_t[b], h_s[b], spans_t[b], spans_s[b], subword_pooling)
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
