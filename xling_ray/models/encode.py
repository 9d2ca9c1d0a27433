"""Running an encoder outside the training forward pass: frozen copies, hidden states of
one layer, sentence embeddings, and the extra views a loss term runs through the model.

* :func:`unwrap`: the model inside a DDP wrapper;
* :func:`frozen_copy`, :func:`frozen_eval`: a frozen ``f0``, and the eval-mode, no-grad
  context every frozen-encoder batch loop runs in (:func:`encode_texts`, the aligner of
  :mod:`xling_ray.methods.adjustment`);
* :func:`encoder_hidden`: token vectors of one hidden layer;
* :func:`encode_texts`: mean-pooled sentence embeddings of a frozen encoder (XITE's
  matching, the embedding diagnostics);
* :func:`segments`, :func:`forward_view`: a view of the batch (substituted tokens, pushed
  embeddings) through the model, with hidden states and, if asked, attention maps.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from xling_ray.models.pooling import mean_pool

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: The keys of a tokenizer's output that the encoder reads.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper. Extra views run on it directly: their
    gradients still reach the same parameters and are all-reduced once, by the
    clean pass's DDP hooks."""
    return getattr(model, "module", model)


@contextlib.contextmanager
def frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout) under ``torch.inference_mode``, then put it
    back in the mode it was in: the frame of every frozen-encoder batch loop."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def encoder_hidden(model: torch.nn.Module, inputs: Any, layer: int = -1) -> torch.Tensor:
    """Token vectors (B, T, d) of ``model``'s encoder (``model.base_model``, so a
    sequence classifier and its bare encoder give the same) at hidden layer
    ``layer``: 0 the embeddings, k the output of layer k, -1 the last layer
    (``last_hidden_state``). Runs with the caller's grad mode and train/eval mode.

    A DDP wrapper is looked through (``model.module``), as the other extra
    passes of a step do: the gradients reach the same parameters and are
    all-reduced by the hooks of the step's pass through the wrapper."""
    model = unwrap(model)
    encoder = getattr(model, "base_model", model)
    kwargs = {k: inputs[k] for k in MODEL_INPUTS if k in inputs}
    if layer == -1:
        return encoder(**kwargs).last_hidden_state
    hidden = encoder(**kwargs, output_hidden_states=True).hidden_states
    if not -len(hidden) <= layer < len(hidden):
        raise ValueError(
            f"hidden layer {layer} does not exist: the encoder has {len(hidden) - 1} layers "
            f"(use 0..{len(hidden) - 1}, or negative indices from the top)"
        )
    return hidden[layer]

def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``f0``: a deep copy of ``model`` in eval mode with no trainable parameter,
    for :func:`regularization_loss`. Pass ``model.base_model`` to copy the
    encoder without the task head."""
    f0 = copy.deepcopy(model)
    f0.eval()
    f0.requires_grad_(False)
    return f0


def encode_texts(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device | None = None,
    layer: int = -1,
    normalize: bool = False,
    texts_b: Sequence[str] | None = None,
    pooling: str = "mean",
) -> torch.Tensor:
    """Sentence embeddings of a frozen encoder: the mean of one layer's hidden
    states over the real tokens of each text,

        e(x) = (1 / |x|) sum_{t : m_t = 1} h_t^(l)(x)

    - ``x``: one text, tokenised with special tokens and truncated to ``max_length``;
    - ``m_t``: the attention mask (1 on real tokens, including ``<s>``/``</s>``
      as in e5's own pooling; 0 on padding); ``|x| = sum_t m_t``;
    - ``h^(l)``: hidden states of layer ``l = layer`` (``-1``: the last;
      ``0``: the embedding layer) of ``model.base_model``, so a
      ``*ForSequenceClassification`` model is encoded without its head.

    With ``texts_b``, each input is the pair ``(texts[i], texts_b[i])``, encoded
    together as the sentence-pair tasks see it. ``pooling="cls"`` takes the first
    token's state ``h_0^(l)`` instead of the mean (BERT's classifier input).

    Returns a float32 CPU tensor (n, d), row i for ``texts[i]``. Choices left
    open: no L2 normalisation unless ``normalize=True`` (cosine matching
    normalises anyway); no ``"query: "``/``"passage: "`` prefix (add it to the
    texts if wanted); ``device=None`` runs on the model's device.

    Batches hold texts of similar token length (sorted, longest first), so
    little padding is computed; padding is masked, so a text's embedding does
    not depend on its batch up to float rounding. Runs under
    ``torch.inference_mode`` with the model in eval mode (no dropout); the
    model's train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"encode_texts: batch_size must be >= 1, got {batch_size}")
    if pooling not in ("mean", "cls"):
        raise ValueError(f"encode_texts: pooling must be 'mean' or 'cls', got {pooling!r}")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"encode_texts: texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    encoder = model.base_model
    dim = model.config.hidden_size
    if not texts:
        return torch.empty(0, dim)
    if device is None:
        device = next(model.parameters()).device
    if texts_b is not None and len(texts_b) != len(texts):
        raise ValueError(f"encode_texts: {len(texts)} texts but {len(texts_b)} texts_b")
    enc = tokenizer(texts, list(texts_b) if texts_b is not None else None, truncation=True, max_length=max_length,
                    padding=False)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    order = sorted(range(len(texts)), key=lambda i: -len(enc["input_ids"][i]))
    out = torch.empty(len(texts), dim)
    with frozen_eval(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({k: [enc[k][i] for i in rows] for k in keys}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = encoder(**batch, output_hidden_states=True, return_dict=True).hidden_states[layer]
            if pooling == "cls":  # the first real token, whichever side the tokenizer pads
                first = batch["attention_mask"].argmax(1)
                pooled = hidden[torch.arange(len(rows), device=hidden.device), first].float()
            else:
                pooled = mean_pool(hidden.float(), batch["attention_mask"])
            out[torch.tensor(rows)] = pooled.cpu()
    return F.normalize(out, dim=-1) if normalize else out


def segments(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch's segment ids as model inputs (``{}`` when the tokenizer gives none). A view
    keeps every token's position, so the clean pass's segment ids stay aligned with it."""
    return {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}


def forward_view(model: torch.nn.Module, attention_mask: torch.Tensor, attentions: bool, **inputs: Any):
    """A view of the batch (``input_ids`` or ``inputs_embeds``) through the unwrapped model,
    with every hidden state and, when ``attentions``, the attention maps."""
    return unwrap(model)(attention_mask=attention_mask, output_hidden_states=True, output_attentions=attentions, **inputs)
