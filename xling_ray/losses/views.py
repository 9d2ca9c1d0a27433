"""Perturbed views of an English batch, for the consistency regularizers.

Two kinds of view, both keeping the token positions of the clean input so
token-level terms (attention consistency) can compare them row by row:

- discrete: :func:`substitute_tokens` replaces some tokens by neighbours from a
  :class:`NeighbourTable` (embedding neighbours or a synonym file);
- continuous: :func:`adversarial_push` and :func:`centroid_push` return an
  offset ``delta`` for the input embeddings; the caller runs the model on
  ``inputs_embeds + delta``.

"Input embeddings" are the word-embedding lookup
(``model.get_input_embeddings()(input_ids)``), before position embeddings and
LayerNorm, which the encoder adds itself when given ``inputs_embeds``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from xling_ray.models.pooling import mean_pool

#: The masked mean over tokens, (B, T, d) -> (B, d); one definition, :func:`xling_ray.models.pooling.mean_pool`.
mean_pooled = mean_pool

log = logging.getLogger(__name__)


def _id_tensor(ids: Iterable[int] | torch.Tensor | None, device: torch.device | None = None) -> torch.Tensor:
    if ids is None:
        return torch.empty(0, dtype=torch.long, device=device)
    ids = ids if isinstance(ids, torch.Tensor) else list(ids)
    return torch.as_tensor(ids, dtype=torch.long, device=device).flatten()


# --------------------------------------------------------------------------- neighbour tables


@dataclass
class SynonymFileReport:
    """What :meth:`NeighbourTable.from_synonym_file` could use from a file."""

    path: str
    entries: int = 0  #: non-comment lines
    words_kept: int = 0  #: words with at least one usable synonym
    words_multi_token: int = 0  #: words that are not one token (unusable: the length must not change)
    words_without_synonym: int = 0  #: single-token words whose synonyms were all unusable
    synonyms_kept: int = 0
    synonyms_multi_token: int = 0  #: synonyms that are not one token, or are unknown/special tokens

    def summary(self) -> str:
        return (
            f"{self.path}: {self.entries} entries, {self.words_kept} words kept with {self.synonyms_kept} synonyms; "
            f"skipped {self.words_multi_token} multi-token words, {self.words_without_synonym} words with no "
            f"single-token synonym, {self.synonyms_multi_token} multi-token synonyms"
        )


@dataclass(eq=False)
class NeighbourTable:
    """For each token id, the token ids it may be replaced by.

    - ``neighbours``: (R, k) token ids, row r padded with -1 after ``counts[r]`` entries;
    - ``counts``: (R,) number of neighbours of each row, >= 1;
    - ``row_of``: (V,) the row of each token id, -1 for ids with no neighbours.

    Build it once with :meth:`from_embeddings` or :meth:`from_synonym_file`,
    move it with :meth:`to` to the device of the batches.
    """

    neighbours: torch.Tensor
    counts: torch.Tensor
    row_of: torch.Tensor
    report: SynonymFileReport | None = field(default=None, compare=False)

    @property
    def vocab_size(self) -> int:
        return self.row_of.shape[0]

    def __len__(self) -> int:
        """Number of token ids that have neighbours."""
        return self.neighbours.shape[0]

    def to(self, device: torch.device | str) -> "NeighbourTable":
        return NeighbourTable(self.neighbours.to(device), self.counts.to(device), self.row_of.to(device), self.report)

    def neighbours_of(self, token_id: int) -> list[int]:
        if not 0 <= token_id < self.vocab_size:
            return []
        row = int(self.row_of[token_id])
        return [] if row < 0 else self.neighbours[row, : int(self.counts[row])].tolist()

    @classmethod
    def from_mapping(
        cls, vocab_size: int, table: dict[int, list[int]], report: SynonymFileReport | None = None
    ) -> "NeighbourTable":
        """A table from ``{token id: [neighbour ids]}``; ids with an empty list get none."""
        ids = sorted(t for t, nbrs in table.items() if nbrs)
        width = max((len(table[t]) for t in ids), default=1)
        neighbours = torch.full((len(ids), width), -1, dtype=torch.long)
        counts = torch.zeros(len(ids), dtype=torch.long)
        row_of = torch.full((vocab_size,), -1, dtype=torch.long)
        for r, t in enumerate(ids):
            neighbours[r, : len(table[t])] = torch.tensor(table[t])
            counts[r] = len(table[t])
            row_of[t] = r
        return cls(neighbours, counts, row_of, report)

    @classmethod
    def from_embeddings(
        cls,
        embeddings: torch.Tensor,
        candidate_ids: Iterable[int] | torch.Tensor,
        k: int = 8,
        special_ids: Iterable[int] | torch.Tensor = (),
        chunk_size: int = 4096,
    ) -> "NeighbourTable":
        """The k nearest candidates of every candidate id by cosine similarity of
        the input embeddings ``E`` (V, d): for a candidate t,

            N_k(t) = top-k_{s in C, s != t} cos(E_t, E_s)

        with ``C`` the candidate ids minus ``special_ids``. XLingLearn's
        controllable semantic perturbation takes replacements from the word
        embedding's neighbourhood; the paper leaves open where the candidates
        come from. Restricting them (e.g. to the ids seen in the training set)
        keeps the cost at ``|C|^2 d`` (computed ``chunk_size`` rows at a time)
        instead of ``V^2 d`` for a 250k vocabulary, and keeps replacements
        among tokens of real text, not rare pieces of other scripts.
        Fewer than k + 1 candidates give each id all the others.

        >>> E = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> NeighbourTable.from_embeddings(E, [0, 1, 2], k=1).neighbours_of(0)
        [1]
        """
        if embeddings.dim() != 2:
            raise ValueError(f"NeighbourTable.from_embeddings: embeddings must be (V, d), got {tuple(embeddings.shape)}")
        vocab_size = embeddings.shape[0]
        cand = _id_tensor(candidate_ids).unique()
        if cand.numel() and (cand.min() < 0 or cand.max() >= vocab_size):
            raise ValueError(
                f"NeighbourTable.from_embeddings: candidate ids must be in [0, {vocab_size}); "
                f"got {int(cand.min())}..{int(cand.max())}"
            )
        cand = cand[~torch.isin(cand, _id_tensor(special_ids))]
        n = cand.numel()
        k = min(k, n - 1)
        if k < 1:
            return cls.from_mapping(vocab_size, {})
        if n > 50_000:
            log.warning(
                "NeighbourTable.from_embeddings: %d candidate ids cost %d x %d similarities (minutes to hours on "
                "a CPU); pass the token ids of the training set instead",
                n, n, n,
            )
        unit = F.normalize(embeddings.detach().float().cpu()[cand], dim=-1)
        neighbours = torch.empty(n, k, dtype=torch.long)
        for start in range(0, n, chunk_size):
            sims = unit[start : start + chunk_size] @ unit.T
            rows = torch.arange(sims.shape[0])
            sims[rows, start + rows] = float("-inf")  # not its own neighbour
            neighbours[start : start + chunk_size] = cand[sims.topk(k, dim=1).indices]
        row_of = torch.full((vocab_size,), -1, dtype=torch.long)
        row_of[cand] = torch.arange(n)
        return cls(neighbours, torch.full((n,), k, dtype=torch.long), row_of)

    @classmethod
    def from_synonym_file(
        cls, path: str | os.PathLike[str], tokenizer: Any, special_ids: Iterable[int] | None = None
    ) -> "NeighbourTable":
        """A table from a synonym dictionary.

        File format: UTF-8 text, one entry per line,

            word<TAB>synonym synonym ...

        the word, one tab, then its synonyms separated by spaces. Empty lines and
        lines starting with ``#`` are skipped. Entries are directed (``a -> b``
        does not imply ``b -> a``); a word listed twice gets the union.

        A replacement must keep the sequence length, so only words and synonyms
        that the tokenizer encodes as one token (e.g. XLM-R's ``"▁house"``) are
        usable; unknown and special tokens are not. The rest is counted in
        ``table.report`` (a :class:`SynonymFileReport`) and logged.

        Raises ``ValueError`` naming the file and line for a line with no tab,
        more than one tab, an empty word, no synonym, or bytes that are not UTF-8.
        """
        path = os.fspath(path)
        report = SynonymFileReport(path=path)
        specials = set(tokenizer.all_special_ids if special_ids is None else special_ids)
        unk = getattr(tokenizer, "unk_token_id", None)

        def single_token(text: str) -> int | None:
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1 or ids[0] in specials or ids[0] == unk:
                return None
            return ids[0]

        table: dict[int, list[int]] = {}
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{path}, line {lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{where}: not UTF-8 ({err})") from err
                line = line.lstrip("\ufeff") if lineno == 1 else line
                line = line.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line.count("\t") != 1:
                    raise ValueError(
                        f"{where}: expected 'word<TAB>synonym synonym ...' with exactly one tab, got {line!r}"
                    )
                word, rest = (part.strip() for part in line.split("\t"))
                synonyms = rest.split()
                if not word or not synonyms:
                    raise ValueError(f"{where}: {'empty word' if not word else 'no synonym'} in {line!r}")
                report.entries += 1
                word_id = single_token(word)
                if word_id is None:
                    report.words_multi_token += 1
                    continue
                kept = table.setdefault(word_id, [])
                for syn in synonyms:
                    syn_id = single_token(syn)
                    if syn_id is None:
                        report.synonyms_multi_token += 1
                    elif syn_id != word_id and syn_id not in kept:
                        kept.append(syn_id)
                        report.synonyms_kept += 1
        report.words_kept = sum(1 for nbrs in table.values() if nbrs)
        report.words_without_synonym = sum(1 for nbrs in table.values() if not nbrs)
        log.info("%s", report.summary())
        return cls.from_mapping(len(tokenizer), table, report)


def substitute_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    table: NeighbourTable,
    p_sub: float,
    max_per_example: int | None = None,
    special_ids: Iterable[int] | torch.Tensor = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """XLingLearn's controllable semantic perturbation: replace tokens by neighbours,

        x~_t = s_t  with probability p_sub,   s_t ~ Uniform(N(x_t))
        x~_t = x_t  otherwise

    for every eligible position t, i.e. a real token (``attention_mask`` 1), not
    in ``special_ids``, with neighbours ``N(x_t)`` in ``table``.

    - ``input_ids``, ``attention_mask``: (B, T);
    - ``p_sub`` in [0, 1]: the replacement probability (the "control");
    - ``max_per_example``: if given, at most this many replacements per row; when
      more are drawn, a uniformly random subset of them is kept (so the expected
      rate falls below ``p_sub`` for long rows);
    - ``generator``: the random source; the same generator state gives the
      same output. Draws happen on the generator's device.

    Left open by the paper and taken here: each position is decided
    independently (not a fixed count per sentence); subword pieces are
    replaced as tokens, not whole words. Returns new ids of the same shape;
    ``input_ids`` is not modified.

    With p_sub = 1 every eligible token is replaced; here 0 and 2 are each
    other's only neighbour and 5 is special:

    >>> table = NeighbourTable.from_mapping(6, {0: [2], 2: [0]})
    >>> substitute_tokens(torch.tensor([[5, 0, 2, 0]]), torch.tensor([[1, 1, 1, 0]]), table, 1.0, special_ids=[5])
    tensor([[5, 2, 0, 0]])
    """
    if not 0.0 <= p_sub <= 1.0:
        raise ValueError(f"substitute_tokens: p_sub must be in [0, 1], got {p_sub}")
    if max_per_example is not None and max_per_example < 0:
        raise ValueError(f"substitute_tokens: max_per_example must be >= 0, got {max_per_example}")
    if input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"substitute_tokens: input_ids {tuple(input_ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} differ"
        )
    device = input_ids.device
    if len(table) == 0:
        return input_ids.clone()
    table = table.to(device)
    in_vocab = (input_ids >= 0) & (input_ids < table.vocab_size)
    rows = torch.where(in_vocab, table.row_of[input_ids.clamp(0, table.vocab_size - 1)], -1)
    eligible = attention_mask.bool() & (rows >= 0) & ~torch.isin(input_ids, _id_tensor(special_ids, device))
    draw_device = generator.device if generator is not None else device
    u = torch.rand(input_ids.shape, generator=generator, device=draw_device).to(device)
    pick = torch.rand(input_ids.shape, generator=generator, device=draw_device).to(device)
    chosen = eligible & (u < p_sub)
    if max_per_example is not None:
        # Given "chosen", the u of chosen positions are i.i.d. uniform on [0, p_sub):
        # keeping the smallest ones keeps a uniformly random subset.
        priority = torch.where(chosen, u, torch.full_like(u, 2.0))
        rank = priority.argsort(dim=1).argsort(dim=1)
        chosen = chosen & (rank < max_per_example)
    safe_rows = rows.clamp_min(0)
    counts = table.counts[safe_rows]
    which = (pick * counts).long().clamp(max=counts - 1)
    replacement = table.neighbours[safe_rows, which]
    return torch.where(chosen, replacement, input_ids)


# --------------------------------------------------------------------------- embedding-space views


def mean_token_norm(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean L2 norm of the real tokens' embeddings of each example."""
    mask = attention_mask.to(inputs_embeds.dtype)
    return (inputs_embeds.norm(dim=-1) * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def _per_example_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def _logits(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def adversarial_push(
    model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    clean_logits: torch.Tensor,
    rho: float,
    steps: int = 1,
    step_size: float | None = None,
    init_scale: float = 1e-2,
    generator: torch.Generator | None = None,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Embedding-Push view as an adversarial offset (Ding et al., COLING 2022;
    computed the FreeLB / SMART way: Zhu et al. ICLR 2020, Jiang et al. ACL 2020):

        delta* ~ argmax_{||delta_b|| <= r_b} KL( softmax(f(e)) || softmax(f(e + delta)) )
        r_b = rho * mean_{t real} ||e_bt||

    by K = ``steps`` steps of normalised gradient ascent with projection,

        delta <- Proj_{r}( delta + alpha * r_b * g_b / ||g_b|| ),  g = grad_delta KL

    - ``model``: called as ``model(inputs_embeds=..., attention_mask=...)``,
      returning logits or an output with ``.logits``;
    - ``inputs_embeds`` e: (B, T, d) clean input embeddings (detached here);
    - ``clean_logits``: (B, C) the clean prediction (detached here: the target);
    - ``rho``: the ball radius relative to the example's mean token norm, so one
      value fits any embedding scale; ||.|| is over all (T, d) entries of an example;
    - ``step_size`` alpha: also relative to r_b; default ``2.5 / steps``
      (Madry et al. 2018's rule), so one step reaches the sphere;
    - ``init_scale``: delta starts as Gaussian noise of norm ``init_scale * r_b``
      (at delta = 0 the KL has a zero gradient);
    - ``generator``: the random source of the start;
    - ``token_type_ids``: (B, T) segment ids of a BERT-style pair input, passed to
      every call of ``model`` (``f(e)`` and ``f(e + delta)`` must read the same segments
      as the clean pass that gave ``clean_logits``); ``None`` for models without them.

    Choices left open by the papers and taken here: the ball is per example and
    L2 over the whole sequence (not per token); padding positions are never
    perturbed; the KL is summed over the batch so each example's ascent is its
    own; the model runs in whatever mode it is in (in train mode each step sees
    its own dropout mask, as in FreeLB). Gradients are taken with
    ``torch.autograd.grad`` with respect to delta only, so no parameter's
    ``.grad`` is touched. Returns the detached ``delta`` (B, T, d), zero at
    padding; the caller runs ``model(inputs_embeds=e + delta)`` with gradient.
    Under DistributedDataParallel pass the wrapped module (``ddp.module``): the
    ascent needs no gradient synchronisation and must not enter DDP's reducer.
    """
    if rho < 0 or steps < 1:
        raise ValueError(f"adversarial_push: need rho >= 0 and steps >= 1, got rho={rho}, steps={steps}")
    e = inputs_embeds.detach()
    mask = attention_mask.to(e.dtype)[..., None]
    radius = (rho * mean_token_norm(e, attention_mask)).view(-1, 1, 1)
    alpha = (2.5 / steps if step_size is None else step_size) * radius
    draw_device = generator.device if generator is not None else e.device
    delta = torch.randn(e.shape, generator=generator, device=draw_device, dtype=e.dtype).to(e.device) * mask
    delta = delta * (init_scale * radius / _per_example_norm(delta).clamp_min(1e-12))
    log_p = F.log_softmax(clean_logits.detach().float(), dim=-1)
    segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    with torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = _logits(model(inputs_embeds=e + delta, attention_mask=attention_mask, **segments))
            kl = F.kl_div(F.log_softmax(logits.float(), dim=-1), log_p, log_target=True, reduction="sum")
            (grad,) = torch.autograd.grad(kl, delta)
            grad = grad * mask
            delta = delta.detach() + alpha * grad / _per_example_norm(grad).clamp_min(1e-12)
            delta = delta * (radius / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return delta.detach() * mask


def centroid_push(
    inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, centroid: torch.Tensor, rho: float
) -> torch.Tensor:
    """The Embedding-Push view as a move away from the English centroid
    (Ding et al., COLING 2022): every real token of example b moves by

        delta_b = rho * mean_{t real} ||e_bt|| * (m_b - c) / ||m_b - c||
        m_b = mean_{t real} e_bt

    - ``inputs_embeds`` e: (B, T, d); ``attention_mask``: (B, T);
    - ``centroid`` c: (d,) the running mean of English input embeddings
      (:class:`RunningCentroid`);
    - ``rho``: the step relative to the mean token norm.

    The same offset for every token moves the mean-pooled embedding by exactly
    ``rho * mean token norm`` straight away from c. Left open by the paper and
    taken here: one direction per example (not per token); the step is relative
    to the token norm; an example sitting exactly on c is not moved. Returns
    the detached delta (B, T, d), zero at padding; the caller uses ``e + delta``.

    Two real tokens of norm 2 with mean (1, 1), centroid 0, rho = 0.5: each
    moves by 0.5 * 2 = 1 along (1, 1) / sqrt(2); the padding token stays:

    >>> e = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]])
    >>> centroid_push(e, torch.tensor([[1, 1, 0]]), torch.zeros(2), rho=0.5)
    tensor([[[0.7071, 0.7071],
             [0.7071, 0.7071],
             [0.0000, 0.0000]]])
    """
    e = inputs_embeds.detach()
    direction = F.normalize(mean_pool(e, attention_mask) - centroid.to(e), dim=-1)  # 0 where m_b == c
    step = rho * mean_token_norm(e, attention_mask)[:, None] * direction
    return step[:, None, :] * attention_mask.to(e.dtype)[..., None]


class RunningCentroid:
    """Exponential moving average of the mean-pooled input embeddings of English batches,

        c <- momentum * c + (1 - momentum) * mean_b m_b

    initialised with the first batch's mean (no bias towards 0). Updates are
    detached and kept in float32. Each data-parallel worker keeps its own
    (batches are i.i.d., so they agree up to noise).
    """

    def __init__(self, momentum: float = 0.99):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"RunningCentroid: momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.value: torch.Tensor | None = None
        self.num_updates = 0

    def update(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch_mean = mean_pool(inputs_embeds.detach().float(), attention_mask).mean(0)
        if self.value is None:
            self.value = batch_mean.clone()
        else:
            self.value = self.momentum * self.value.to(batch_mean) + (1.0 - self.momentum) * batch_mean
        self.num_updates += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "value": self.value, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum, self.value, self.num_updates = state["momentum"], state["value"], state["num_updates"]
