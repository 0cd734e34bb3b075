"""Order statistics of candidate rounds from sorted columns (defense/columns.py) and the oracle's
Median and trimmed-mean paths: hand-worked columns, then equality with sorting the materialised rounds
and with the plain call."""
import pytest
import torch

from fedml_heterofl.attack import build_attack
from fedml_heterofl.defense import RoundContext
from fedml_heterofl.defense.columns import MergedColumns, SignedCandidates, sorted_columns
from fedml_heterofl.defense.median import Median, coordinate_median
from fedml_heterofl.defense.trimmed_mean import TrimmedMean
from fedml_heterofl.defense.oracle import Oracle, known_pieces
from fedml_heterofl.defense.rows import poisoned_rows, row_scales


def test_merged_columns_by_hand():
    # one coordinate: known 1, 3, 5; extra values 4 (twice) and 0 (none): merged 1, 3, 4, 4, 5
    merged = MergedColumns(torch.tensor([[1.0, 3.0, 5.0]]), torch.tensor([[0.0, 4.0]]), torch.tensor([[0, 2]]))
    assert merged.n == 5
    assert [float(merged.value_at(r)) for r in range(5)] == [1.0, 3.0, 4.0, 4.0, 5.0]
    # a tie with a known value, and an extra value below every known one: 2 | 2, 2 | 3 -> 2, 2, 2, 3, ...
    merged = MergedColumns(torch.tensor([[2.0, 3.0, 7.0]]), torch.tensor([[-1.0, 2.0]]), torch.tensor([[1, 2]]))
    assert [float(merged.value_at(r)) for r in range(6)] == [-1.0, 2.0, 2.0, 2.0, 3.0, 7.0]
    with pytest.raises(ValueError, match="rank 6 is outside the 6 values"):
        merged.value_at(6)


def test_rank_sums_by_hand():
    # merged 1, 3, 4, 4, 5 (known 1, 3, 5; the extra 4 twice)
    merged = MergedColumns(torch.tensor([[1.0, 3.0, 5.0]]), torch.tensor([[0.0, 4.0]]), torch.tensor([[0, 2]]))
    spans = [(1, 4), (0, 5), (2, 2), (0, 1), (3, 5)]
    assert [float(merged.rank_sum(a, b)) for a, b in spans] == [11.0, 17.0, 0.0, 1.0, 9.0]
    assert merged.rank_sum(1, 4).dtype == torch.float64
    with pytest.raises(ValueError, match="ranks 3..6 are not a span of the 5 values"):
        merged.rank_sum(3, 6)


def test_merged_columns_equal_the_sorted_concatenation():
    g = torch.Generator().manual_seed(3)
    d, k, m = 40, 9, 3
    known = torch.randint(-3, 4, (k, d), generator=g).float()  # many ties
    values = torch.randint(-4, 5, (d, m), generator=g).float().sort(dim=1).values
    counts = torch.randint(0, 4, (1, m), generator=g).expand(d, m)  # the same row count in every column
    merged = MergedColumns(sorted_columns(known), values, counts)
    full = torch.cat([known.T, values.repeat_interleave(counts[0], dim=1)], dim=1).sort(dim=1).values
    for r in range(merged.n):
        assert torch.equal(merged.value_at(r), full[:, r]), r
    # every span's sum (small integers: exact in float64), through the fixed middle span and around it
    prefix = torch.cat([torch.zeros(d, 1, dtype=torch.float64), full.double().cumsum(dim=1)], dim=1)
    for start in range(merged.n + 1):
        for stop in range(start, merged.n + 1):
            assert torch.equal(merged.rank_sum(start, stop), prefix[:, stop] - prefix[:, start]), (start, stop)


def flipped_round(k: int, f: int, d: int, seed: int):
    """Known rows with ties and Alg. 7-like directions: one magnitude, 20 % of each row's signs flipped."""
    g = torch.Generator().manual_seed(seed)
    known = torch.randn(k, d, generator=g).round(decimals=1)
    magnitude = torch.randn(d, generator=g).abs().round(decimals=1)
    signs = torch.where(torch.rand(f, d, generator=g) < 0.2, -1.0, 1.0)
    return known, known.mean(dim=0), magnitude * signs


@pytest.mark.parametrize("k,f,d", [(7, 4, 50), (8, 3, 33), (30, 10, 200)])
def test_median_oracle_from_columns_equals_the_plain_call(k, f, d):
    known, base, directions = flipped_round(k, f, d, seed=k)
    fast = Oracle(Median(), known, base, directions, RoundContext())
    plain = Oracle(Median(), known, base, directions, RoundContext(), plain=True)
    assert fast.columns is not None and plain.columns is None
    for gamma in (0.0, 0.3, 1.7, -0.9, 12.0):
        for poisoned in sorted({f, 1, max(1, f // 2)}):
            scales = row_scales(gamma, poisoned, f, torch.float32)
            a, b = fast(scales), plain(scales)
            # bit for bit: the median selects values (and averages the middle two as the rule does)
            assert torch.equal(a.update, b.update), (gamma, poisoned)
            assert torch.equal(a.kept, b.kept) and (a.deviation, a.against) == (b.deviation, b.against)
            # and the plain call is the rule on the rows the attack sends
            sent = torch.cat([known, poisoned_rows(base, directions, scales)])
            assert torch.equal(b.update, coordinate_median(sent))


@pytest.mark.parametrize("k,f,d,trim", [(7, 4, 50, 2), (30, 10, 200, 10), (30, 10, 200, 3), (8, 3, 33, 5),
                                        (8, 3, 33, 0)])
def test_trimmed_mean_oracle_from_columns_equals_the_plain_call(k, f, d, trim):
    """(8, 3, 33, 5): fewer known rows than the two trimmed ends, no fixed middle span."""
    known, base, directions = flipped_round(k, f, d, seed=k + trim)
    rule = TrimmedMean(f=trim)
    fast = Oracle(rule, known, base, directions, RoundContext())
    plain = Oracle(rule, known, base, directions, RoundContext(), plain=True)
    assert fast.columns is not None and plain.columns is None
    for gamma in (0.0, 0.3, 1.7, -0.9, 12.0, 3e4):
        for poisoned in sorted({f, 1, max(1, f // 2)}):
            scales = row_scales(gamma, poisoned, f, torch.float32)
            a, b = fast(scales), plain(scales)
            sent = torch.cat([known, poisoned_rows(base, directions, scales)]).double()
            # the definition in float64: the middle n - 2·trim of each sorted coordinate, averaged
            middle = sent.T.sort(dim=1).values[:, trim:sent.shape[0] - trim]
            reference = middle.mean(dim=1)
            # the columns' float64 sum is rounded once to float32 (half an ulp of the mean, plus the sum's own)
            assert torch.allclose(a.update.double(), reference, rtol=0,
                                  atol=float(reference.abs().max()) * 2 ** -23), (gamma, poisoned)
            # the rule's float32 sum of m values is off by at most m ulps of the largest
            bound = middle.shape[1] * float(middle.abs().max()) * 2 ** -24
            assert torch.allclose(b.update.double(), reference, rtol=0, atol=bound)
            assert torch.equal(a.kept, b.kept) and bool(a.kept.all())
            assert a.deviation == pytest.approx(b.deviation, abs=2 * bound * d ** 0.5)


def test_trimmed_mean_oracle_refuses_too_few_rows_as_the_rule_does():
    known, base, directions = flipped_round(5, 2, 20, seed=4)
    fast = Oracle(TrimmedMean(f=4), known, base, directions, RoundContext())  # n = 7 <= 2f
    with pytest.raises(ValueError, match="trimmed mean requires n > 2f; got n=7 updates and f=4"):
        fast(0.5)


def test_median_oracle_scales_not_in_consecutive_rows():
    known, base, directions = flipped_round(9, 5, 60, seed=1)
    scales = torch.tensor([[0.5], [0.0], [0.5], [2.0], [0.0]])  # groups of rows 0, 2 and 1, 4: not consecutive
    fast = Oracle(Median(), known, base, directions, RoundContext())
    sent = torch.cat([known, poisoned_rows(base, directions, scales)])
    assert torch.equal(fast(scales).update, coordinate_median(sent))


def test_median_oracle_falls_back_to_the_plain_call_where_columns_do_not_apply():
    known, base, directions = flipped_round(8, 3, 30, seed=2)
    # directions that are not one magnitude with flipped signs: no columns, the plain call
    jittered = directions * torch.linspace(0.5, 1.5, 30)
    jittered[1] *= 1.1
    assert Oracle(Median(), known, base, jittered, RoundContext()).plain
    # a known row of zeros would be screened out: the columns would not be the server's round
    zero_known = known.clone()
    zero_known[0] = 0
    assert Oracle(Median(), zero_known, base, directions, RoundContext()).columns is None
    # a γ whose poisoned rows overflow to inf: those rows are screened out, which the plain call decides
    fast = Oracle(Median(), known, base, directions, RoundContext())
    huge = 1e39
    a = fast(huge)
    b = Median()(torch.cat([known, poisoned_rows(base, directions, huge)]))
    assert torch.equal(a.kept, b.kept) and not bool(a.kept[-3:].any()) and torch.equal(a.update, b.update)


def test_known_pieces_compute_only_what_the_rule_uses():
    known, base, directions = flipped_round(8, 3, 30, seed=5)
    gram, columns = known_pieces(Median(), known)
    assert gram is None and torch.equal(columns.values, known.T.sort(dim=1).values)
    gram, columns = known_pieces(build_attack_defense("multikrum"), known)
    assert columns is None and torch.allclose(gram, known.double() @ known.double().T)
    assert known_pieces(Median(), known, plain=True) == (None, None)


def build_attack_defense(name: str):
    from fedml_heterofl.defense import build_defense
    return build_defense(name, f=3)


@pytest.mark.parametrize("rule", [Median(), TrimmedMean(f=4)])
def test_adaptive_deviation_against_columns_rules_sends_what_the_plain_oracle_sends(rule):
    g = torch.Generator().manual_seed(11)
    benign, own = torch.randn(16, 40, generator=g), torch.randn(4, 40, generator=g)
    sent = {}
    for oracle in ("fast", "plain"):
        attack = build_attack("adaptive_deviation", oracle=oracle)
        sent[oracle] = attack.attack(benign, own, RoundContext(), defense=rule)
        real = rule(torch.cat([benign, sent[oracle]])).update
        if isinstance(rule, Median):  # values selected: bit for bit
            assert torch.equal(attack.predicted_update, real)
        else:  # float64 sums against the rule's float32 mean
            assert torch.allclose(attack.predicted_update, real, rtol=0, atol=1e-6)
    assert torch.equal(sent["fast"], sent["plain"])
