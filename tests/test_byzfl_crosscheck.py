"""Our breadth rules and attacks against ByzFL 0.0.11 (``pip install byzfl==0.0.11``; the test extra) on
identical inputs. Skipped where ByzFL is not installed. Where the definitions differ, the test says how
and sets ours to ByzFL's definition (read from ByzFL's source, ``byzfl/aggregators/aggregators.py`` and
``byzfl/attacks/attacks.py``)."""
import numpy as np
import pytest
import torch

from fedml_heterofl.attack import build_attack
from fedml_heterofl.defense import RoundContext
from fedml_heterofl.defense.centered_clipping import CenteredClipping
from fedml_heterofl.defense.geomed import GeoMed
from fedml_heterofl.defense.trimmed_mean import TrimmedMean

byzfl = pytest.importorskip("byzfl")


def data(seed, n=11, d=9):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, d, generator=g)
    U[: n // 4] = 4 * U[: n // 4] + 3  # a few far-off rows
    return U


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("f", [0, 1, 3, 5])
def test_trimmed_mean_equals_byzfl_trmean(seed, f):
    # Same definition: per coordinate drop the f largest and f smallest values, average the rest
    # (ByzFL: TrMean(f); both reject 2f >= n).
    U = data(seed)
    ours = TrimmedMean(f=f)(U).update
    theirs = byzfl.TrMean(f=f)(U.double().numpy())
    assert np.allclose(ours.double().numpy(), theirs, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("nu,T", [(0.1, 3), (1e-3, 1), (1e-6, 40)])
def test_geomed_equals_byzfl_geometric_median(seed, nu, T):
    # Differences: ByzFL's GeometricMedian(nu, T) starts at the zero vector and always runs T iterations;
    # ours (RFA) starts at the weighted mean and stops early when the objective stops improving
    # (ftol), with defaults ν = 1e-6, ≤ 100 iterations (ByzFL: ν = 0.1, T = 3). With init="zero",
    # max_iter=T, ftol=0 the iterations are the same smoothed Weiszfeld steps β_i = 1/max(ν, ‖z − x_i‖).
    U = data(seed)
    ours = GeoMed(nu=nu, max_iter=T, ftol=0.0, init="zero")(U).update
    theirs = byzfl.GeometricMedian(nu=nu, T=T)(U.double().numpy())
    assert np.allclose(ours.double().numpy(), theirs, atol=1e-5)


def test_geomed_converged_agrees_with_byzfl_from_either_start():
    # run to convergence, the two starts reach the same geometric median
    U = data(7)
    ours = GeoMed(nu=1e-6, max_iter=500, ftol=0.0)(U).update  # RFA's start: the mean
    theirs = byzfl.GeometricMedian(nu=1e-6, T=500)(U.double().numpy())
    assert np.allclose(ours.double().numpy(), theirs, atol=1e-4)


@pytest.mark.parametrize("tau,L", [(1.0, 1), (0.5, 3), (5.0, 2)])
def test_centered_clipping_equals_byzfl_over_rounds(tau, L):
    # ByzFL's CenteredClipping(m=None, L, tau) starts at 0 and keeps its last output as the next call's
    # centre — our center="previous" over consecutive rounds. Differences: ByzFL's `m` argument cannot
    # be used (its type check `not isinstance(m, np.ndarray) or not isinstance(m, torch.Tensor)` rejects
    # every value); its τ is always absolute (ours defaults to each iteration's median distance); it
    # keeps the state of every call, ours per round index (so the attack's oracle calls do not move it).
    theirs = byzfl.CenteredClipping(L=L, tau=tau)
    ours = CenteredClipping(tau=tau, iterations=L, center="previous")
    for r in range(3):
        U = data(10 + r)
        a = ours(U, RoundContext(round_idx=r)).update
        b = theirs(U.double().numpy())
        assert np.allclose(a.double().numpy(), b, atol=1e-5), f"round {r}"


@pytest.mark.parametrize("tau", [0.5, 1.5])
def test_alie_equals_byzfl_a_little_is_enough_with_the_same_z(tau):
    # ByzFL's ALittleIsEnough(tau) sends μ + τ·σ of the honest vectors with σ the unbiased (ddof=1)
    # standard deviation (its docstring writes 1/n; its code uses ddof=1, as ours). Differences: ByzFL's
    # τ is fixed (default 1.5), ours derives z_max from n and f (Baruch et al.) unless z is given; ByzFL
    # adds the shift, our default subtracts it (sign=-1). With z=τ, sign=+1 they agree.
    U = data(3)
    benign, own = U[:8], U[8:]
    ours = build_attack("alie", z=tau, sign=1).attack(benign, own)
    theirs = byzfl.ALittleIsEnough(tau=tau)(benign.double().numpy())
    assert np.allclose(ours.double().numpy(), np.broadcast_to(theirs, ours.shape), atol=1e-5)


@pytest.mark.parametrize("eps", [0.1, 2.0, 10.0])
def test_ipm_equals_byzfl_inner_product_manipulation(eps):
    # Same definition: −ε · mean of the honest vectors (ByzFL's tau is our ε; both default to 2).
    U = data(4)
    benign, own = U[:8], U[8:]
    ours = build_attack("ipm", epsilon=eps).attack(benign, own)
    theirs = byzfl.InnerProductManipulation(tau=eps)(benign.double().numpy())
    assert np.allclose(ours.double().numpy(), np.broadcast_to(theirs, ours.shape), atol=1e-5)
