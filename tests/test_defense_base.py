"""Contracts and shared helpers of the defenses: defense/base.py, screening.py, gram.py."""
import pytest
import torch

from fedml_heterofl.defense import REGISTRY, build_defense
from fedml_heterofl.defense.gram import cosine_from_gram, norms_from_gram, sq_distances_from_gram
from fedml_heterofl.defense.rows import DenseRows, gram_matrix
from fedml_heterofl.defense.screening import screen_rows


def test_screening_reports_each_kind_and_keeps_huge_finite_rows():
    U = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    U[1, 2] = float("nan")
    U[2] = 0.0
    U[3, 0] = float("-inf")
    U[4] = 3e30  # finite, but its float32 norm overflows: must not be called non-finite
    index, removed = screen_rows(DenseRows(U))
    assert index.tolist() == [0, 4, 5]
    assert removed["non_finite"].tolist() == [1, 3]
    assert removed["zero_norm"].tolist() == [2]


def test_screening_removes_nothing_when_clean():
    index, removed = screen_rows(DenseRows(torch.randn(4, 3)))
    assert removed == {} and index.tolist() == [0, 1, 2, 3]


def test_gram_helpers_match_plain_loop_float64():
    g = torch.Generator().manual_seed(1)
    U = torch.randn(7, 50_000, generator=g)
    U[5] = U[4] + 1e-3 * torch.randn(50_000, generator=g)  # near-duplicate pair
    G64 = gram_matrix(U, torch.float64, chunk=4096)  # blocked float64 accumulation
    ref = torch.empty(7, 7, dtype=torch.float64)
    dist = torch.empty(7, 7, dtype=torch.float64)
    U64 = U.double()
    for i in range(7):
        for j in range(7):
            ref[i, j] = U64[i] @ U64[j]
            dist[i, j] = ((U64[i] - U64[j]) ** 2).sum()
    assert torch.allclose(G64, ref, rtol=1e-12)
    assert torch.allclose(sq_distances_from_gram(G64), dist, rtol=1e-6, atol=1e-9)
    assert torch.allclose(norms_from_gram(G64), U64.norm(dim=1))
    cos = ref / (U64.norm(dim=1)[:, None] * U64.norm(dim=1)[None, :])
    assert torch.allclose(cosine_from_gram(gram_matrix(U)).double(), cos, atol=1e-5)
    # the near-duplicate distance (about 0.05 against squared norms of about 5e4) survives in float64
    assert abs(float(sq_distances_from_gram(G64)[4, 5]) - float(dist[4, 5])) < 1e-6 * float(dist[4, 5])


def test_build_defense_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown defense 'nope'; allowed: .*heterofl"):
        build_defense("nope")
    with pytest.raises(TypeError, match="heterofl"):
        build_defense("heterofl", not_a_param=1)
    assert build_defense(" HeteroFL ").name == "heterofl"
    assert REGISTRY["heterofl"].name == "heterofl"
