"""Property (issue 23): any YAML text — random documents, random edits of the shipped configs (which
can plant anchors, aliases, repeated keys, broken syntax, text for numbers) — either loads as
:class:`Settings` or is refused with one line (:class:`SettingsError`, no line break), never another
exception, and fast (the deadline).

Scope: loading and validating (:func:`load_settings`), not running; running mutated configurations is
``tests/test_config_property.py``'s. Deterministic (``derandomize``), 60 + 60 examples, and 30 edits
of small shipped grid files through :func:`load_grid`.
"""
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from fedml_heterofl.experiments.grid import load_grid
from fedml_heterofl.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
SHIPPED = {p.name: p.read_text() for p in CONFIGS if p.name != "gpu_mapping.yaml"}
#: small shipped grids (each validates in well under a second)
GRIDS = {name: (ROOT / "config" / "grids" / name).read_text()
         for name in ("demo.yaml", "ablation_fashion_mnist_cnn.yaml", "calibrate_shakespeare_rnn.yaml")}
#: YAML's syntax characters and some that make numbers, text and flags
ALPHABET = ":-[]{},&*!|>'\"#%@`?. \n\t_abexyz0129"
#: snippets an edit can insert: anchors, aliases, merges, repeated keys, tags, numbers as text
SNIPPETS = ["&a ", "*a", "<<: *a\n", "!!python/object:os.system ", "learning_rate: 1e-3\n", "  comm_round: 2\n",
            "data_args:\n", ": ", "- ", "{", "]", "\n  ", "~", ".nan", "9" * 30, "'", "!!binary x"]


def check(tmp_path, text, load=load_settings, path="c.yaml"):
    path = tmp_path / path
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    start = time.perf_counter()
    try:
        result = load(path)
    except SettingsError as exc:
        assert "\n" not in str(exc) and str(exc), repr(str(exc))
    else:
        assert isinstance(result, Settings) or all(isinstance(cell, Settings) for _, cell in result[1])
    assert time.perf_counter() - start < 2.0


@st.composite
def edited(draw, texts):
    text = texts[draw(st.sampled_from(sorted(texts)))]
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        end = min(len(text), at + draw(st.integers(0, 12)))
        piece = draw(st.one_of(st.sampled_from(SNIPPETS), st.text(ALPHABET, max_size=6)))
        text = text[:at] + piece + text[end:]
    return text


FAST = settings(max_examples=60, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FAST
@given(text=st.text(ALPHABET, max_size=120))
def test_random_yaml_text_loads_or_is_one_line(tmp_path, text):
    check(tmp_path, text)


@FAST
@given(text=edited(SHIPPED))
def test_edited_shipped_configs_load_or_are_one_line(tmp_path, text):
    check(tmp_path, text)


@settings(FAST, max_examples=30)
@given(text=edited(GRIDS))
def test_edited_shipped_grids_load_or_are_one_line(tmp_path, text):
    (tmp_path / "grids").mkdir(exist_ok=True)
    for name, config in SHIPPED.items():  # the grids' bases, as beside config/grids/
        (tmp_path / name).write_text(config)
    check(tmp_path, text, lambda path: load_grid(str(path)), "grids/g.yaml")


def test_the_shipped_configs_load():
    for name, text in SHIPPED.items():
        assert isinstance(load_settings(ROOT / "config" / name), Settings), name
