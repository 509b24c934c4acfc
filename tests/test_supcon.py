"""SupConLoss against a brute-force reference written straight from the formula in its docstring."""
import math

import pytest
import torch

from nnunet_ssl.blocks.supcon import SupConLoss
from nnunet_ssl.data.positions import positional_positive_mask


def reference_supcon(embeddings, mask, temperature, base_temperature):
    """Plain-Python SupCon L_out:
    s_ij = cos(z_i, z_j) / tau
    l_i  = -(tau / tau_base) * mean_{j in P(i), j != i} [s_ij - log sum_{a != i} exp(s_ia)]
    loss = mean of l_i over anchors with at least one positive."""
    z = embeddings.detach().double().tolist()
    m = mask.tolist()
    n = len(z)
    scale = temperature / base_temperature if base_temperature else 1.0

    def cos(u, v):
        dot = sum(a * b for a, b in zip(u, v))
        return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    s = [[cos(z[i], z[j]) / temperature for j in range(n)] for i in range(n)]
    losses = []
    for i in range(n):
        positives = [j for j in range(n) if j != i and m[i][j]]
        if not positives:
            continue
        log_denominator = math.log(sum(math.exp(s[i][a]) for a in range(n) if a != i))
        losses.append(-scale * sum(s[i][j] - log_denominator for j in positives) / len(positives))
    return sum(losses) / len(losses)


def simclr_mask(batch_size):
    """Sample k's two views sit at k and k + B."""
    n = 2 * batch_size
    mask = torch.zeros(n, n, dtype=torch.bool)
    for k in range(batch_size):
        mask[k, k + batch_size] = mask[k + batch_size, k] = True
    return mask


def pcl_mask(batch_size, seed, threshold=0.15):
    positions = torch.rand(batch_size, generator=torch.Generator().manual_seed(seed))
    return positional_positive_mask(torch.cat([positions, positions]), threshold)


def sparse_mask(n, seed):
    """Random symmetric mask where (at least) anchors 0 and 1 have no positive at all."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=g) < 0.3
    mask = mask | mask.T
    mask[:2, :] = False
    mask[:, :2] = False
    mask[2, 3] = mask[3, 2] = True  # at least one positive pair
    return mask


def asymmetric_mask(n, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=g) < 0.4
    mask[0, 1] = True
    return mask


MASKS = {
    "simclr": lambda n, seed: simclr_mask(n // 2),
    "pcl": lambda n, seed: pcl_mask(n // 2, seed),
    "some_anchors_without_positive": sparse_mask,
    "asymmetric_random": asymmetric_mask,
}


@pytest.mark.parametrize("mask_kind", sorted(MASKS))
@pytest.mark.parametrize("n,d", [(4, 3), (8, 16), (12, 5), (20, 32)])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("base_temperature", [0.07, None])
def test_matches_brute_force_reference(mask_kind, n, d, temperature, base_temperature):
    seed = n * 1000 + d
    embeddings = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    mask = MASKS[mask_kind](n, seed)
    loss = SupConLoss(temperature, base_temperature)(embeddings, mask)
    expected = reference_supcon(embeddings, mask, temperature, base_temperature)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_default_arguments_are_pcl_values():
    loss = SupConLoss()
    assert loss.temperature == 0.1
    assert loss.scale == pytest.approx(0.1 / 0.07)
    assert SupConLoss(0.5, None).scale == 1.0


def test_analytic_two_aligned_one_opposite():
    # z0 = z1 = e1, z2 = -e1; positives 0 <-> 1; anchor 2 has none and is skipped.
    # l_0 = l_1 = -(1/tau - log(exp(1/tau) + exp(-1/tau))) = log(1 + exp(-2/tau))
    tau = 0.5
    embeddings = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-3.0, 0.0]])  # norms differ: cosine ignores them
    mask = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    expected = math.log(1 + math.exp(-2 / tau))
    assert SupConLoss(tau, None)(embeddings, mask).item() == pytest.approx(expected, rel=1e-5)
    # with base_temperature the loss is scaled by tau / base
    assert SupConLoss(tau, 0.07)(embeddings, mask).item() == pytest.approx(expected * tau / 0.07, rel=1e-5)


def test_analytic_orthogonal_embeddings():
    # all cosines 0 -> every log-probability is -log(N - 1), whatever the positives
    n = 5
    embeddings = torch.eye(n) * torch.arange(1, n + 1).float()[:, None]
    for mask in (torch.ones(n, n, dtype=torch.bool), torch.eye(n, dtype=torch.bool).roll(1, dims=1)):
        assert SupConLoss(0.1, None)(embeddings, mask).item() == pytest.approx(math.log(n - 1), rel=1e-5)


@pytest.mark.parametrize("mask_kind", sorted(MASKS))
def test_invariant_to_permuting_the_batch(mask_kind):
    n, d = 12, 8
    embeddings = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
    mask = MASKS[mask_kind](n, 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    loss_fn = SupConLoss(0.1)
    original = loss_fn(embeddings, mask)
    permuted = loss_fn(embeddings[perm], mask[perm][:, perm])
    assert permuted.item() == pytest.approx(original.item(), rel=1e-5, abs=1e-6)


def test_invariant_to_embedding_norms():
    embeddings = torch.randn(8, 6, generator=torch.Generator().manual_seed(3))
    scales = torch.rand(8, 1, generator=torch.Generator().manual_seed(4)) * 10 + 0.1
    mask = simclr_mask(4)
    loss_fn = SupConLoss(0.2)
    assert loss_fn(embeddings * scales, mask).item() == pytest.approx(loss_fn(embeddings, mask).item(), rel=1e-5)


@pytest.mark.parametrize("mask_kind", sorted(MASKS))
def test_gradients_are_finite_and_flow(mask_kind):
    n, d = 10, 7
    embeddings = torch.randn(n, d, generator=torch.Generator().manual_seed(5)).requires_grad_()
    mask = MASKS[mask_kind](n, 5)
    loss = SupConLoss(0.1)(embeddings, mask)
    loss.backward()
    assert embeddings.grad is not None
    assert torch.isfinite(embeddings.grad).all()
    assert embeddings.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    embeddings = torch.randn(6, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    mask = pcl_mask(3, 6, threshold=0.3)
    loss_fn = SupConLoss(0.5, None)
    z = embeddings.clone().requires_grad_()
    loss_fn(z, mask).backward()
    eps = 1e-3
    for i, j in [(0, 0), (2, 3), (5, 1)]:
        plus, minus = embeddings.clone(), embeddings.clone()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric = (reference_supcon(plus, mask, 0.5, None) - reference_supcon(minus, mask, 0.5, None)) / (2 * eps)
        assert z.grad[i, j].item() == pytest.approx(numeric, rel=1e-2, abs=1e-4)


def test_diagonal_of_the_mask_is_ignored():
    embeddings = torch.randn(8, 5, generator=torch.Generator().manual_seed(7))
    for mask in (simclr_mask(4), pcl_mask(4, 7), sparse_mask(8, 7)):
        with_diagonal = mask | torch.eye(8, dtype=torch.bool)
        without_diagonal = mask & ~torch.eye(8, dtype=torch.bool)
        loss_fn = SupConLoss(0.1)
        a, b = loss_fn(embeddings, with_diagonal), loss_fn(embeddings, without_diagonal)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_anchors_without_positives_do_not_count():
    # anchors 2..5 have no positive: they still enter the denominators, but the loss is the mean of l_0, l_1
    embeddings = torch.randn(6, 4, generator=torch.Generator().manual_seed(8))
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    loss = SupConLoss(0.1, None)(embeddings, mask).item()
    expected = reference_supcon(embeddings, mask, 0.1, None)  # mean over anchors 0 and 1 only
    # compute l_0 and l_1 by hand from the cosine matrix
    z = torch.nn.functional.normalize(embeddings.double(), dim=1)
    s = (z @ z.T / 0.1).tolist()
    terms = []
    for i, j in [(0, 1), (1, 0)]:
        terms.append(-(s[i][j] - math.log(sum(math.exp(s[i][a]) for a in range(6) if a != i))))
    assert loss == pytest.approx(sum(terms) / 2, rel=1e-5)
    assert expected == pytest.approx(sum(terms) / 2, rel=1e-9)


@pytest.mark.parametrize("shape", [(7, 7), (8, 7), (8,), (1, 8, 8)])
def test_wrongly_shaped_mask_raises(shape):
    with pytest.raises(ValueError):
        SupConLoss()(torch.randn(8, 4), torch.ones(shape, dtype=torch.bool))


def test_mask_without_any_positive_raises():
    embeddings = torch.randn(6, 4)
    with pytest.raises(ValueError):
        SupConLoss()(embeddings, torch.zeros(6, 6, dtype=torch.bool))
    with pytest.raises(ValueError):  # only the (ignored) diagonal
        SupConLoss()(embeddings, torch.eye(6, dtype=torch.bool))


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_non_positive_temperature_raises(temperature):
    with pytest.raises(ValueError):
        SupConLoss(temperature)


def test_half_precision_embeddings_are_computed_in_float32():
    embeddings = torch.randn(8, 16, generator=torch.Generator().manual_seed(9))
    mask = simclr_mask(4)
    loss = SupConLoss(0.1)(embeddings.to(torch.bfloat16), mask)
    assert loss.dtype == torch.float32
    expected = reference_supcon(embeddings.to(torch.bfloat16).float(), mask, 0.1, 0.07)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
