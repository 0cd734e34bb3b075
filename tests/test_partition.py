"""Partitions (LDA on FedML's per-class step, IID, natural) and their load/label diversity."""
import time

import numpy as np
import pytest
import torch

from fedml_heterofl.data.partition import cap_partition, diversity, iid_partition, lda_partition, natural_partition


def labels(n=5000, classes=10, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def assert_exact_cover(parts, n):
    flat = torch.cat(parts)
    assert flat.numel() == n and torch.equal(flat.sort().values, torch.arange(n))
    assert all(torch.equal(p, p.sort().values) and p.dtype == torch.long for p in parts)


def test_lda_is_seeded_and_assigns_every_sample_once():
    y = labels()
    a, b = lda_partition(y, 20, 0.5, seed=3), lda_partition(y, 20, 0.5, seed=3)
    assert len(a) == 20 and all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, lda_partition(y, 20, 0.5, seed=4)))
    assert_exact_cover(a, len(y))
    assert min(len(p) for p in a) >= 10


def test_lda_leaves_numpy_global_rng_alone():
    np.random.seed(2024)
    before = np.random.get_state()
    lda_partition(labels(), 20, 0.3, seed=0)
    after = np.random.get_state()
    assert np.array_equal(before[1], after[1]) and before[2:] == after[2:]


def test_lda_draws_equal_fedml_outer_function_under_the_same_seed():
    from fedml.core.data.noniid_partition import non_iid_partition_with_dirichlet_distribution

    y = labels(2000)
    state = np.random.get_state()
    try:
        np.random.seed(11)
        theirs = non_iid_partition_with_dirichlet_distribution(y.numpy(), 10, 10, 0.5)
    finally:
        np.random.set_state(state)
    ours = lda_partition(y, 10, 0.5, seed=11)
    assert [sorted(theirs[i]) for i in range(10)] == [p.tolist() for p in ours]


def test_smaller_alpha_concentrates_labels():
    y = labels()
    low = diversity(y, lda_partition(y, 20, 0.1, seed=0), 10)
    high = diversity(y, lda_partition(y, 20, 10.0, seed=0), 10)
    assert low["mean_label_entropy"] < high["mean_label_entropy"] - 0.2
    assert high["mean_label_entropy"] > 0.9
    assert np.mean([c["distinct"] for c in low["label_diversity"]]) < 10


def test_too_small_data_raises_fast_instead_of_hanging():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="20 clients at least 10 samples each from only 50"):
        lda_partition(labels(50), 20, 0.5, seed=0, min_size=10)
    # enough in total, but alpha so small that no draw fills every client: bounded by max_tries
    with pytest.raises(ValueError, match="in 7 tries"):
        lda_partition(labels(205), 20, 0.01, seed=0, min_size=10, max_tries=7)
    assert time.perf_counter() - start < 5
    for bad in (dict(num_clients=0), dict(alpha=0.0), dict(max_tries=0)):
        with pytest.raises(ValueError):
            lda_partition(labels(100), seed=0, **{"num_clients": 5, "alpha": 1.0, "max_tries": 10, **bad})


def test_iid_partition():
    a = iid_partition(103, 10, seed=5)
    assert_exact_cover(a, 103)
    assert sorted(len(p) for p in a) == [10] * 7 + [11] * 3
    assert all(torch.equal(p, q) for p, q in zip(a, iid_partition(103, 10, seed=5)))
    assert not all(torch.equal(p, q) for p, q in zip(a, iid_partition(103, 10, seed=6)))
    with pytest.raises(ValueError):
        iid_partition(3, 10, seed=0)


def test_natural_partition_keeps_groups_and_rejects_overlap():
    groups = [torch.tensor([0, 3]), torch.tensor([1, 2, 4])]
    assert [p.tolist() for p in natural_partition(groups)] == [[0, 3], [1, 2, 4]]
    with pytest.raises(ValueError, match="overlap"):
        natural_partition([torch.tensor([0, 1]), torch.tensor([1])])


def test_diversity_by_hand():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    stats = diversity(y, [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])], 3)
    assert stats["load"] == pytest.approx([2 / 3, 4 / 3])
    assert stats["load_cv"] == pytest.approx(1 / 3)  # sizes 2, 4: population std 1 / mean 3
    # client 1 holds labels 0, 1, 2, 2: p = (1/4, 1/4, 1/2)
    h = -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5)) / np.log(3)
    assert stats["label_entropy"] == pytest.approx([0.0, h])
    assert stats["mean_label_entropy"] == pytest.approx(h / 2)
    assert stats["label_diversity"] == [{"distinct": 1, "entropy": 0.0}, {"distinct": 3, "entropy": pytest.approx(h)}]
    assert stats["histogram"] == [[2, 0, 0], [1, 1, 2]]


def test_cap_partition_keeps_random_subsets_of_large_parts():
    y = labels(n=20000)
    parts = lda_partition(y, 20, 0.5, seed=3)
    capped = cap_partition(parts, 300, seed=3)
    for p, c in zip(parts, capped):
        assert len(c) == min(len(p), 300)
        assert torch.equal(c, c.sort().values) and bool(torch.isin(c, p).all())  # a sorted subset
        if len(p) <= 300:
            assert torch.equal(c, p)
    assert all(torch.equal(a, b) for a, b in zip(capped, cap_partition(parts, 300, seed=3)))  # seeded
    assert not all(torch.equal(a, b) for a, b in zip(capped, cap_partition(parts, 300, seed=4)))
    # a uniform subset keeps the label mix: over the capped large clients, the share of each client's
    # majority label moves by a few points at most (binomial sd of a share among 300: <= 2.9 points)
    big = [(p, c) for p, c in zip(parts, capped) if len(p) > 600]
    assert big
    for p, c in big:
        top = torch.bincount(y[p], minlength=10).argmax()
        share = lambda ix: float((y[ix] == top).float().mean())
        assert abs(share(p) - share(c)) < 0.12
    with pytest.raises(ValueError, match="max_size must be >= 1, got 0"):
        cap_partition(parts, 0, seed=0)
