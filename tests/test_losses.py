"""Mathematical properties of the regularizers' loss functions (no model needed)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xling_ray.losses import classification_loss
from xling_ray.losses.alignment import alignment, alignment_uniformity, uniformity
from xling_ray.losses.attention import attention_consistency, attention_divergence, select_layers
from xling_ray.losses.targets import robust_target_loss
from xling_ray.losses.transport import sinkhorn_divergence

COSTS = ["cosine", "sqeuclidean"]
KINDS = ["kl", "symmetric_kl", "mse"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- Sinkhorn divergence


@pytest.mark.parametrize("cost", COSTS)
def test_sinkhorn_is_zero_between_equal_measures(cost):
    x = torch.randn(16, 8, generator=_gen(0))
    assert abs(sinkhorn_divergence(x, x, cost=cost).item()) < 1e-4
    # The same measure with its points listed in another order: different matrices, same value 0.
    perm = torch.randperm(16, generator=_gen(1))
    assert abs(sinkhorn_divergence(x, x[perm], eps=0.1, cost=cost).item()) < 1e-4


def test_sinkhorn_grows_with_a_translation():
    x = torch.randn(32, 8, generator=_gen(0))
    direction = F.normalize(torch.randn(8, generator=_gen(1)), dim=0)
    values = [sinkhorn_divergence(x, x + s * direction, cost="sqeuclidean").item() for s in (0.5, 1.0, 2.0)]
    assert values[0] > 1e-4
    assert values[0] < values[1] < values[2]


def test_sinkhorn_cosine_grows_with_a_rotation():
    angles = torch.linspace(0, math.pi / 2, 16)
    circle = lambda a: torch.stack([a.cos(), a.sin()], dim=1)  # noqa: E731
    values = [sinkhorn_divergence(circle(angles), circle(angles + t), cost="cosine").item() for t in (0.1, 0.3, 0.6)]
    assert values[0] > 1e-4
    assert values[0] < values[1] < values[2]
    # Cosine cost ignores the norm: scaled copies are the same measure on the sphere.
    assert abs(sinkhorn_divergence(circle(angles), 3.0 * circle(angles)).item()) < 1e-4


def test_sinkhorn_is_nonnegative_on_random_sets():
    for seed in range(5):
        x = torch.randn(12, 16, generator=_gen(seed))
        y = 0.5 * torch.randn(20, 16, generator=_gen(100 + seed)) + 0.3
        for eps in (0.01, 0.1, 1.0):
            for cost in COSTS:
                assert sinkhorn_divergence(x, y, eps=eps, cost=cost).item() >= -1e-5


@pytest.mark.parametrize("cost", COSTS)
def test_sinkhorn_small_eps_is_finite_and_differentiable(cost):
    x = (10.0 * torch.randn(32, 16, generator=_gen(0))).requires_grad_()
    y = 10.0 * torch.randn(32, 16, generator=_gen(1))
    value = sinkhorn_divergence(x, y, eps=0.01, cost=cost)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value) and value.item() > 0
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Useful: a few gradient steps on x bring the sets closer.
    z = x.detach().clone().requires_grad_()
    opt = torch.optim.SGD([z], lr=50.0 if cost == "sqeuclidean" else 20.0)
    for _ in range(5):
        opt.zero_grad()
        sinkhorn_divergence(z, y, eps=0.01, cost=cost).backward()
        opt.step()
    assert sinkhorn_divergence(z, y, eps=0.01, cost=cost).item() < value.item()


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("eps", [0.01, 0.1])
def test_sinkhorn_gradient_at_identical_inputs_is_finite_and_zero(cost, eps):
    # S(., y) has its minimum at x = y, so the gradient there must vanish.
    y = torch.randn(16, 8, generator=_gen(0))
    x = y.clone().requires_grad_()
    (grad,) = torch.autograd.grad(sinkhorn_divergence(x, y, eps=eps, cost=cost), x)
    assert torch.isfinite(grad).all()
    assert grad.norm().item() < 1e-4


def test_sinkhorn_gradient_matches_finite_differences():
    # The envelope-theorem gradient (plan times cost gradient) is the true one at convergence.
    x = torch.randn(16, 8, generator=_gen(0))
    y = torch.randn(12, 8, generator=_gen(1))
    u = F.normalize(torch.randn(16, 8, generator=_gen(2)).flatten(), dim=0).view(16, 8)
    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(sinkhorn_divergence(xr, y, eps=0.1, n_iter=1000), xr)
    h = 1e-2
    at = lambda z: sinkhorn_divergence(z, y, eps=0.1, n_iter=1000)  # noqa: E731
    fd = (at(x + h * u) - at(x - h * u)) / (2 * h)
    assert (grad * u).sum().item() == pytest.approx(fd.item(), rel=0.02, abs=1e-5)


def test_sinkhorn_single_points_equal_the_cost():
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert sinkhorn_divergence(x, y, cost="cosine").item() == pytest.approx(1.0, abs=1e-6)
    # sqeuclidean is divided by the largest cross cost: one pair, so exactly 1.
    assert sinkhorn_divergence(x, y, cost="sqeuclidean").item() == pytest.approx(1.0, abs=1e-6)


def test_sinkhorn_ignores_mixed_precision():
    x, y = torch.randn(16, 8, generator=_gen(0)), torch.randn(16, 8, generator=_gen(1))
    full = sinkhorn_divergence(x, y, eps=0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = sinkhorn_divergence(x, y, eps=0.01)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(full.item(), rel=1e-6)


def test_class_conditional_cost_penalises_label_mismatch():
    x = torch.randn(16, 8, generator=_gen(0))
    y = x + 0.05 * torch.randn(16, 8, generator=_gen(1))
    labels = torch.arange(16) % 2
    plain = sinkhorn_divergence(x, y).item()
    mismatched = sinkhorn_divergence(x, y, labels_x=labels, labels_y=1 - labels, eta=0.5).item()
    matched = sinkhorn_divergence(x, y, labels_x=labels, labels_y=labels, eta=0.5).item()
    assert mismatched > plain + 0.1
    assert matched == pytest.approx(plain, abs=1e-3)
    with pytest.raises(ValueError, match="labels"):
        sinkhorn_divergence(x, y, eta=0.5)


# --------------------------------------------------------------------------- alignment and uniformity


def test_alignment_hand_values():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert alignment(z, z).item() == 0.0
    # Orthogonal pair 2, identical pair 0: mean 1. Norms do not matter.
    assert alignment(3.0 * z, torch.tensor([[0.0, 1.0], [0.0, 0.5]])).item() == pytest.approx(1.0)
    # Antipodal: ||2 e_1||^2 = 4.
    assert alignment(z[:1], -z[:1]).item() == pytest.approx(4.0)


def test_uniformity_hand_values_and_batch_of_one():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert uniformity(z, t=2.0).item() == pytest.approx(-4.0)
    assert uniformity(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), t=2.0).item() == pytest.approx(0.0, abs=1e-6)
    one = torch.randn(1, 4, requires_grad=True)
    value = uniformity(one)
    assert value.item() == 0.0
    value.backward()  # still part of the graph


def test_uniformity_prefers_spread_points():
    spread = F.normalize(torch.randn(64, 16, generator=_gen(0)), dim=-1)
    clustered = torch.ones(64, 16) + 0.1 * torch.randn(64, 16, generator=_gen(1))
    assert uniformity(spread).item() < uniformity(clustered).item() - 1.0
    orthogonal = torch.eye(16)
    assert uniformity(orthogonal).item() < uniformity(clustered).item()


def test_uniformity_gradient_is_finite_for_coinciding_points():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(uniformity(z, t=2.0), z)
    assert torch.isfinite(grad).all()


def test_alignment_uniformity_is_the_weighted_sum():
    z = torch.randn(8, 4, generator=_gen(0))
    z_tilde = z + 0.1 * torch.randn(8, 4, generator=_gen(1))
    total = alignment_uniformity(z, z_tilde, beta=0.3, t=1.5)
    assert total.item() == pytest.approx(alignment(z, z_tilde).item() + 0.3 * uniformity(z, 1.5).item(), abs=1e-6)


# --------------------------------------------------------------------------- attention consistency


def _maps(batch: int, heads: int, length: int, seed: int) -> torch.Tensor:
    return torch.softmax(2.0 * torch.randn(batch, heads, length, length, generator=_gen(seed)), dim=-1)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_divergence_zero_for_identical_positive_otherwise(kind):
    p, q = _maps(2, 3, 5, 0), _maps(2, 3, 5, 1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert attention_divergence(p, p.clone(), mask, kind).item() == pytest.approx(0.0, abs=1e-7)
    assert attention_divergence(p, q, mask, kind).item() > 1e-3


def test_attention_divergence_hand_values():
    p = torch.tensor([1.0, 0.0]).expand(1, 1, 2, 2)
    q = torch.tensor([0.5, 0.5]).expand(1, 1, 2, 2)
    mask = torch.ones(1, 2)
    assert attention_divergence(p, q, mask, "kl").item() == pytest.approx(math.log(2), rel=1e-6)
    # Each row: ((1 - 0.5)^2 + (0 - 0.5)^2) / 2 keys.
    assert attention_divergence(p, q, mask, "mse").item() == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_divergence_ignores_padding(kind):
    p, q = _maps(2, 2, 5, 0), _maps(2, 2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    base = attention_divergence(p, q, mask, kind).item()

    def pad(maps: torch.Tensor, seed: int) -> torch.Tensor:
        # Two more padding positions: garbage rows, and some mass leaking onto the padding keys.
        out = _maps(2, 2, 7, seed)
        out[..., :5, :5] = 0.9 * maps
        out[..., :5, 5:] = 0.05
        return out

    padded_mask = torch.cat([mask, torch.zeros(2, 2, dtype=mask.dtype)], dim=1)
    assert attention_divergence(pad(p, 10), pad(q, 11), padded_mask, kind).item() == pytest.approx(base, rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_gradient_flows_only_to_other(kind):
    p = _maps(2, 2, 4, 0).requires_grad_()
    q = _maps(2, 2, 4, 1).requires_grad_()
    attention_divergence(p, q, torch.ones(2, 4), kind).backward()
    assert p.grad is None
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_select_layers():
    attns = [None] * 4
    assert select_layers(attns, "last") == [3]
    assert select_layers(attns, "all") == [0, 1, 2, 3]
    assert select_layers(attns, 2) == [2, 3]
    for bad in (0, 5, True, "first"):
        with pytest.raises(ValueError):
            select_layers(attns, bad)


def test_attention_consistency_averages_the_chosen_layers():
    ref = tuple(_maps(2, 2, 4, s) for s in range(3))
    other = tuple(_maps(2, 2, 4, 10 + s) for s in range(3))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    per_layer = [attention_divergence(r, o, mask, "kl").item() for r, o in zip(ref, other)]
    assert attention_consistency(ref, other, mask, "all").item() == pytest.approx(sum(per_layer) / 3, rel=1e-6)
    assert attention_consistency(ref, other, mask, 2).item() == pytest.approx(sum(per_layer[1:]) / 2, rel=1e-6)
    assert attention_consistency(ref, other, mask, "last").item() == pytest.approx(per_layer[2], rel=1e-6)
    assert attention_consistency(ref, ref, mask, "all").item() == pytest.approx(0.0, abs=1e-7)


# --------------------------------------------------------------------------- robust targets


def test_robust_targets_gamma_zero_is_plain_cross_entropy():
    logits = torch.randn(8, 3, generator=_gen(0))
    labels = torch.randint(0, 3, (8,), generator=_gen(1))
    reference = torch.randn(8, 3, generator=_gen(2))
    assert torch.equal(robust_target_loss(logits, labels, reference, 0.0), classification_loss(logits, labels))


def test_robust_targets_gamma_one_on_own_logits_is_the_entropy():
    logits = torch.randn(8, 3, generator=_gen(0))
    labels = torch.randint(0, 3, (8,), generator=_gen(1))
    p = logits.softmax(-1)
    entropy = -(p * p.log()).sum(-1).mean()
    assert robust_target_loss(logits, labels, logits, 1.0).item() == pytest.approx(entropy.item(), rel=1e-6)


def test_robust_targets_is_linear_in_gamma():
    # Cross-entropy is linear in its target, so L(gamma) interpolates L(0) and L(1).
    logits, reference = torch.randn(8, 3, generator=_gen(0)), torch.randn(8, 3, generator=_gen(2))
    labels = torch.randint(0, 3, (8,), generator=_gen(1))
    ends = [robust_target_loss(logits, labels, reference, g).item() for g in (0.0, 1.0)]
    assert robust_target_loss(logits, labels, reference, 0.3).item() == pytest.approx(0.7 * ends[0] + 0.3 * ends[1], rel=1e-5)


def test_robust_targets_stop_gradient_on_reference():
    logits = torch.randn(4, 3, generator=_gen(0), requires_grad=True)
    reference = torch.randn(4, 3, generator=_gen(1), requires_grad=True)
    robust_target_loss(logits, torch.tensor([0, 1, 2, 0]), reference, 0.5).backward()
    assert reference.grad is None
    assert logits.grad is not None
    with pytest.raises(ValueError, match="gamma"):
        robust_target_loss(logits, torch.tensor([0, 1, 2, 0]), reference, 1.5)
