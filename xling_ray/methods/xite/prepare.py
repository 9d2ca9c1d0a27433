"""XITE's preparation, once before training: each target-language pair labelled by a vote
of its nearest English training examples and paired with the nearest of those carrying
that label, and the LDA projector (:func:`prepare_xite`); then synthetic batches drawn
from it at every step (:meth:`XiteData.draw`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xling_ray.data import DataError, PairDataset
from xling_ray.data.batches import EncodedSet, collate, encode
from xling_ray.methods.xite.blocks import LanguageLDA, match_to_english
from xling_ray.models.encode import encode_texts


@dataclass
class XiteData:
    """Synthetic-example material of one task: target pairs, their matched English
    training example and its label, and the projector phi. ``labels[i]`` is always the
    label of ``source[matched[i]]`` (:func:`~xling_ray.methods.xite.blocks.match_to_english`)."""

    target: EncodedSet           # target pairs, tokenised
    source: EncodedSet           # the English training set (tokenised)
    matched: torch.Tensor        # (n,) each target pair's English partner: the nearest of its k neighbours with the voted label
    labels: torch.Tensor         # (n,) the voted label, which is also the partner's label
    projector: LanguageLDA | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.matched)

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``n`` synthetic examples: source and target token batches padded to one width, so
        that their states can be interpolated position by position; the mask is their union.
        With segment ids (BERT-style tokenizers) each side's are ``src_types``/``tgt_types``.
        ``generator``: the random source (the task's per-rank one, ``state["generator"]``)."""
        idx = torch.randint(len(self), (n,), generator=generator).tolist()
        src = collate(self.source, [int(self.matched[i]) for i in idx], self.pad_id)
        tgt = collate(self.target, idx, self.pad_id)
        width = max(src["input_ids"].shape[1], tgt["input_ids"].shape[1])
        pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
        batch = {
            "src_ids": pad(src["input_ids"], self.pad_id), "tgt_ids": pad(tgt["input_ids"], self.pad_id),
            "src_mask": pad(src["attention_mask"], 0), "tgt_mask": pad(tgt["attention_mask"], 0),
        }
        if "token_type_ids" in src and "token_type_ids" in tgt:
            batch["src_types"], batch["tgt_types"] = pad(src["token_type_ids"], 0), pad(tgt["token_type_ids"], 0)
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["mask"] = torch.maximum(batch["src_mask"], batch["tgt_mask"])
        batch["labels"] = self.labels[idx].to(device)
        return batch


def prepare_xite(model, tokenizer, train_data: PairDataset, train: EncodedSet, targets: dict[str, PairDataset],
                 cfg: "XiteConfig", max_length: int, pad_id: int, batch_size: int = 64) -> XiteData:
    """Steps 1-3 of XITE with the model as it is before training (the frozen encoder):
    encode (mean pooling), label each target pair by a vote of its ``cfg.k`` nearest English
    examples and pair it with the nearest of those carrying the voted label (``cfg.tau``
    filters on that pair's similarity), fit the language LDA at the mixing layer."""
    if cfg.layer > model.config.num_hidden_layers:
        raise ValueError(f"losses.xite.layer={cfg.layer}, but the model has {model.config.num_hidden_layers} layers")
    langs = [lang for lang, d in targets.items() for _ in range(len(d))]
    a = [t for d in targets.values() for t in d.text_a]
    b = [t for d in targets.values() for t in d.text_b]
    if not a:
        raise DataError("XITE: the target pool is empty (check losses.pool and data.languages)")
    enc = lambda x, y, layer: encode_texts(model, tokenizer, x, batch_size, max_length, layer=layer, texts_b=y)  # noqa: E731
    tgt_last = enc(a, b, -1)
    src_last = enc(list(train_data.text_a), list(train_data.text_b), -1)
    match = match_to_english(tgt_last, src_last, torch.tensor(train_data.labels), k=cfg.k, tau=cfg.tau)
    keep = match.keep.nonzero().flatten().tolist()
    if not keep:
        raise DataError(f"XITE: no target pair reaches similarity tau={cfg.tau}; lower losses.xite.tau")
    projector = None
    if cfg.lda:
        n_en = min(len(train_data), 2000)
        if cfg.layer == model.config.num_hidden_layers:  # the last layer: already encoded
            states_tgt, states_src = tgt_last, src_last[:n_en]
        else:
            states_tgt = enc(a, b, cfg.layer)
            states_src = enc(list(train_data.text_a[:n_en]), list(train_data.text_b[:n_en]), cfg.layer)
        projector = LanguageLDA().fit(torch.cat([states_tgt, states_src]), langs + ["en"] * n_en,
                                      n_components=cfg.lda_components, shrinkage=cfg.lda_shrinkage)
    target = encode(tokenizer, PairDataset("xite", "mixed", "pool", tuple(str(i) for i in range(len(a))),
                                           tuple(a), tuple(b), tuple(0 for _ in a)), max_length)
    target = target.subset(keep, labels=tuple(0 for _ in keep))
    return XiteData(target, train, match.indices[keep], match.labels[keep], projector, pad_id)
