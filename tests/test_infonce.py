"""InfoNCELoss and retrieval_top1 against a brute-force reference written from the MoCo formula."""
import math

import pytest
import torch

from nnunet_ssl.blocks.infonce import InfoNCELoss, retrieval_top1
from nnunet_ssl.blocks.queue import MemoryQueue


def _cos(u, v):
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def reference_infonce(query, positive_key, negatives, temperature):
    """Plain-Python, float64:
    with negatives n_1..n_K:  l_i = -log[ exp(s(q_i, k_i)) / (exp(s(q_i, k_i)) + sum_j exp(s(q_i, n_j))) ]
    in-batch (None):          l_i = -log[ exp(s(q_i, k_i)) / sum_j exp(s(q_i, k_j)) ]
    with s(u, v) = cos(u, v) / tau; loss = mean_i l_i."""
    q, k = query.detach().double().tolist(), positive_key.detach().double().tolist()
    losses = []
    for i in range(len(q)):
        positive = math.exp(_cos(q[i], k[i]) / temperature)
        others = k if negatives is None else negatives.detach().double().tolist()
        denominator = sum(math.exp(_cos(q[i], o) / temperature) for o in others)
        if negatives is not None:
            denominator += positive
        losses.append(-math.log(positive / denominator))
    return sum(losses) / len(losses)


def reference_top1(query, positive_key, negatives):
    """Fraction of i with s(q_i, k_i) strictly above every other candidate's similarity."""
    q, k = query.double().tolist(), positive_key.double().tolist()
    hits = 0
    for i in range(len(q)):
        others = [k[j] for j in range(len(k)) if j != i] if negatives is None else negatives.double().tolist()
        hits += all(_cos(q[i], k[i]) > _cos(q[i], o) for o in others)
    return hits / len(q)


def random_inputs(n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    query, key = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    return query, query * 0.5 + key, (torch.randn(k, d, generator=g) if k else None)


@pytest.mark.parametrize("n,k,d", [(1, 1, 2), (3, 5, 4), (8, 17, 16), (5, 64, 8), (2, 0, 3), (6, 0, 16), (16, 0, 5)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_matches_brute_force_reference(n, k, d, temperature):
    query, key, negatives = random_inputs(n, k, d, seed=100 * n + k + d)
    loss = InfoNCELoss(temperature)(query, key, negatives)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_infonce(query, key, negatives, temperature), rel=1e-4, abs=1e-5)


def test_default_temperature_is_moco():
    assert InfoNCELoss().temperature == 0.07


@pytest.mark.parametrize("k", [1, 4, 100])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_analytic_identical_pair_with_orthogonal_negatives(k, temperature):
    # q = k+ (cos 1), every negative orthogonal to q (cos 0):
    # l = -log[e^{1/tau} / (e^{1/tau} + K e^0)] = log(1 + K e^{-1/tau})
    d = 3
    query = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # norms differ from the keys': cosine ignores them
    key = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, -3.0]])
    g = torch.Generator().manual_seed(k)
    negatives = torch.zeros(k, d)
    negatives[:, 1] = torch.rand(k, generator=g) + 0.5  # along e2, orthogonal to both queries
    expected = math.log1p(k * math.exp(-1 / temperature))
    # float32 logsumexp(logits) - logit at logits ~ 1/tau = 14: absolute error ~ a few ulp(14) ~ 1e-6
    assert InfoNCELoss(temperature)(query, key, negatives).item() == pytest.approx(expected, rel=1e-5, abs=4e-6)


def test_analytic_all_orthogonal_gives_log_of_the_candidate_count():
    # positive and negatives all orthogonal to q: every logit is 0, l = log(K + 1), whatever tau
    query = torch.tensor([[1.0, 0, 0, 0, 0]])
    key = torch.tensor([[0, 1.0, 0, 0, 0]])
    negatives = torch.eye(5)[2:]
    assert InfoNCELoss(0.07)(query, key, negatives).item() == pytest.approx(math.log(4), rel=1e-6)


@pytest.mark.parametrize("n", [2, 5])
def test_analytic_in_batch_orthonormal(n):
    # q_i = k_i = e_i: l_i = -log[e^{1/tau} / (e^{1/tau} + (N - 1) e^0)] = log(1 + (N - 1) e^{-1/tau})
    tau = 0.2
    basis = torch.eye(n)
    expected = math.log1p((n - 1) * math.exp(-1 / tau))
    assert InfoNCELoss(tau)(basis * 3, basis).item() == pytest.approx(expected, rel=1e-5)


def test_invariant_to_permuting_negatives_and_the_batch_and_to_norms():
    query, key, negatives = random_inputs(6, 10, 8, seed=7)
    loss_fn = InfoNCELoss(0.1)
    loss = loss_fn(query, key, negatives).item()
    perm_b = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    perm_k = torch.randperm(10, generator=torch.Generator().manual_seed(2))
    assert loss_fn(query[perm_b], key[perm_b], negatives[perm_k]).item() == pytest.approx(loss, rel=1e-5)
    assert loss_fn(query * 4, key * 0.1, negatives * 9).item() == pytest.approx(loss, rel=1e-5)
    in_batch = loss_fn(query, key).item()
    assert loss_fn(query[perm_b], key[perm_b]).item() == pytest.approx(in_batch, rel=1e-5)


@pytest.mark.parametrize("with_negatives", [True, False])
def test_gradient_flows_to_query_and_key_not_to_detached_negatives(with_negatives):
    query, key, base = random_inputs(4, 6, 5, seed=3)
    query.requires_grad_()
    key.requires_grad_()
    base.requires_grad_()
    negatives = (base * 2).detach() if with_negatives else None
    InfoNCELoss(0.2)(query, key, negatives).backward()
    for tensor in (query, key):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    assert base.grad is None


def test_gradient_matches_finite_differences():
    query, key, negatives = (t.double() for t in random_inputs(3, 4, 4, seed=5))
    q = query.clone().requires_grad_()
    InfoNCELoss(0.5)(q, key, negatives).backward()
    eps = 1e-4
    for i, j in [(0, 0), (1, 3), (2, 2)]:
        plus, minus = query.clone(), query.clone()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric = (reference_infonce(plus, key, negatives, 0.5)
                   - reference_infonce(minus, key, negatives, 0.5)) / (2 * eps)
        assert q.grad[i, j].item() == pytest.approx(numeric, rel=1e-3, abs=1e-5)


def test_half_precision_inputs_are_computed_in_float32():
    query, key, negatives = random_inputs(4, 8, 16, seed=11)
    bf16 = [t.to(torch.bfloat16) for t in (query, key, negatives)]
    loss = InfoNCELoss(0.07)(*bf16)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_infonce(*[t.float() for t in bf16], 0.07), rel=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is switched off inside
        assert InfoNCELoss(0.07)(query, key, negatives).item() == pytest.approx(
            reference_infonce(query, key, negatives, 0.07), rel=1e-4)


def test_works_with_queue_contents_enqueued_after_the_loss():
    queue = MemoryQueue(8, 4)
    loss_fn = InfoNCELoss(0.2)
    for step in range(3):
        query, key, _ = random_inputs(3, 0, 4, seed=step)
        query.requires_grad_()
        negatives, _ = queue.contents()
        loss = loss_fn(query, key, negatives if len(negatives) else None)
        queue.enqueue(key)
        loss.backward()
        assert query.grad is not None
    assert int(queue.num_filled) == 8


@pytest.mark.parametrize("query_shape,key_shape,negative_shape", [
    ((4, 3), (4, 2), (5, 3)), ((4, 3), (3, 3), (5, 3)), ((4, 3), (4, 3), (5, 2)), ((4, 3), (4, 3), (0, 3)),
    ((4, 3), (4, 3), (5,)), ((4,), (4,), (5, 4)), ((0, 3), (0, 3), (5, 3)), ((1, 3), (1, 3), None),
])
def test_bad_shapes_raise(query_shape, key_shape, negative_shape):
    negatives = None if negative_shape is None else torch.randn(negative_shape)
    with pytest.raises(ValueError):
        InfoNCELoss()(torch.randn(query_shape), torch.randn(key_shape), negatives)
    with pytest.raises(ValueError):
        retrieval_top1(torch.randn(query_shape), torch.randn(key_shape), negatives)


@pytest.mark.parametrize("temperature", [0.0, -0.07, float("nan")])
def test_non_positive_temperature_raises(temperature):
    with pytest.raises(ValueError):
        InfoNCELoss(temperature)


def test_retrieval_top1_hand_made_with_negatives():
    e = torch.eye(3)
    # q0 matches its key (1 vs 0, 0): hit; q1 = e2 sees its key e1 at 0 but negative e2 at 1: miss
    query, key, negatives = torch.stack([e[0], e[1]]), torch.stack([e[0], e[0]]), torch.stack([e[1], e[2]])
    result = retrieval_top1(query, key, negatives)
    assert result.ndim == 0 and not result.requires_grad
    assert result.item() == 0.5
    assert retrieval_top1(query, key, e[2:]).item() == 0.5  # q1: 0 vs 0 is a tie, a miss
    assert retrieval_top1(query * 3, key * 0.2, negatives * 7).item() == 0.5  # norms do not matter


def test_retrieval_top1_hand_made_in_batch():
    e = torch.eye(3)
    # sims q_i . k_j: q0 -> [1, 0, 1] tie with k2: miss; q1 -> [0, 1, 0] hit; q2 -> [0, 0, 0] tie: miss
    assert retrieval_top1(e, torch.stack([e[0], e[1], e[0]])).item() == pytest.approx(1 / 3)
    assert retrieval_top1(e, e).item() == 1.0
    # every key the negation of its query: the positive is the least similar candidate
    assert retrieval_top1(e, -e).item() == 0.0


def test_retrieval_top1_collapsed_embeddings_score_zero():
    same = torch.ones(4, 6)
    assert retrieval_top1(same, same, torch.ones(10, 6)).item() == 0.0
    assert retrieval_top1(same, same).item() == 0.0


@pytest.mark.parametrize("n,k", [(6, 0), (5, 9), (12, 40)])
def test_retrieval_top1_matches_reference_on_random_data(n, k):
    query, key, negatives = random_inputs(n, k, 4, seed=n + k)
    assert retrieval_top1(query, key, negatives).item() == pytest.approx(reference_top1(query, key, negatives))
