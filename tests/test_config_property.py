"""Property (issue 15): any configuration mapping is either accepted and runs its one round, or refused
with :class:`SettingsError` — never another exception.

Configurations are drawn as a valid tiny run (4 MNIST clients of 8 samples, LR, one round, any defense,
any or no attack with 1-2 attackers) with up to four mutations: a key of any section (or an unknown
key) set to a value from that key's pool or from a pool of wrong types, non-finite, negative, huge
and empty values; a whole section replaced by a non-mapping or removed; unknown sections; attack and
defense parameters drawn from every rule's parameter names (and misspelt ones) with small, wrong and
non-finite values. Scope: datasets and models are those that run in a second here (LR on MNIST or
Fashion-MNIST) plus names that must be refused; round and epoch counts stay small (an accepted
config runs to its end). Deterministic (``derandomize``), 40 examples, no deadline.
"""
import math
import tempfile
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fedml_heterofl.simulation.workload as workload_module
from fedml_heterofl import components
from fedml_heterofl.attack import REGISTRY as ATTACKS
from fedml_heterofl.defense import REGISTRY as DEFENSES
from fedml_heterofl.settings import FEDML_PASSTHROUGH, SECTIONS, SettingsError, settings_from_dict
from fedml_heterofl.simulation.runner import Simulation

#: wrong types, out-of-range and non-finite numbers, empty values
GARBAGE = [None, True, False, -1, 0, 1, 2, 3, 0.5, -0.5, math.nan, math.inf, -math.inf, 1e308, 2**31, 2**63,
           "x", "", [], [1], {}, {"a": 1}]
#: per key, values beside GARBAGE (valid ones and near misses); round and epoch counts without large ints
POOLS = {
    ("common_args", "training_type"): ["simulation", "cross_silo"],
    ("common_args", "random_seed"): [0, 7, 2**32 - 1, 2**32],
    ("common_args", "run_name"): ["r1", "a=b,c", "..", "a/b", " x", "n" * 300],
    ("data_args", "dataset"): ["mnist", "fashion_mnist", "svhn"],
    ("data_args", "partition_method"): ["hetero", "homo", "natural", "lda"],
    ("data_args", "partition_alpha"): [0.2, 0.01, 0.009, 1e6],
    ("data_args", "trigger_size"): [1, 4, 10_000, 10_001],
    ("data_args", "max_samples_per_client"): [1, 8],
    ("data_args", "max_clients"): [2],
    ("model_args", "model"): ["lr", "rnn", "resnet20", "transformer"],
    ("train_args", "client_num_in_total"): [2, 4, 10**6],
    ("train_args", "client_num_per_round"): [1, 2, 4, 5],
    ("train_args", "batch_size"): [1, 4, 10**9],
    ("train_args", "client_optimizer"): ["sgd", "adam"],
    ("train_args", "learning_rate"): [0.1, 1e-3, 3e38],
    ("train_args", "momentum"): [0.0, 0.9, 1.0],
    ("train_args", "weight_decay"): [0.0, 1e-4],
    ("train_args", "vectorised_training"): [None, True, False],
    ("validation_args", "frequency_of_the_test"): [1, 2],
    ("comm_args", "backend"): ["single_process", "MPI", "sp"],
    ("tracking_args", "log_level"): ["INFO", "DEBUG", "verbose"],
    ("attack_args", "attack_type"): [*ATTACKS, "nope"],
    ("attack_args", "byzantine_client_num"): [0, 1, 2, 3, 4],
    ("defense_args", "defense_type"): [*DEFENSES, "krum9"],
}
#: keys whose large values would make an accepted run last for ever: no large ints from GARBAGE
SMALL = {("train_args", "comm_round"): [1, 0, -1, 1.5, "1", None, math.nan, True],
         ("train_args", "epochs"): [1, 2, 0, -1, 1.5, "1", None, math.inf]}
#: every key of every section and an unknown one per section (not the folders: results_dir is the
#: test's, and a data_cache_dir of garbage would be another machine's missing data)
FOLDERS = {("common_args", "results_dir"), ("data_args", "data_cache_dir")}
KEYS = sorted(({(s, f.name) for s, cls in SECTIONS.items() for f in fields(cls)}
               | {(s, k) for s, keys in FEDML_PASSTHROUGH.items() for k in keys}
               | {(s, "bogus_key") for s in SECTIONS}) - FOLDERS)
PARAMETER_NAMES = sorted({p for cls in [*ATTACKS.values(), *DEFENSES.values()]
                          for p in components.accepted_parameters(cls)} | {"betta", "bond"})
PARAMETER_VALUES = [0, 1, 2, 0.5, -1.0, 1e308, math.nan, "x", "std", "partial", [1, 2], [3], [5], True, None]


def value_for(key):
    if key in SMALL:
        return st.sampled_from(SMALL[key])
    if key[1] in ("attack_params", "defense_params"):
        params = st.dictionaries(st.sampled_from(PARAMETER_NAMES), st.sampled_from(PARAMETER_VALUES), max_size=3)
        return st.one_of(params, st.sampled_from(GARBAGE))
    return st.sampled_from(POOLS.get(key, []) + GARBAGE)


SET = st.sampled_from(KEYS).flatmap(lambda key: st.tuples(st.just("set"), st.just(key), value_for(key)))
SECTION = st.tuples(st.just("section"), st.sampled_from([*SECTIONS, "environment_args", "bogus_args"]),
                    st.sampled_from([None, 1, "text", [1], {}]))
DROP = st.tuples(st.just("drop"), st.sampled_from(list(SECTIONS)), st.none())


@st.composite
def configs(draw):
    defense = draw(st.sampled_from([None, *DEFENSES]))
    attack = draw(st.sampled_from([None, *ATTACKS]))
    cfg = {
        "common_args": {"random_seed": draw(st.integers(0, 3))},
        "data_args": {"dataset": "mnist", "max_samples_per_client": 8},
        "model_args": {"model": "lr"},
        "train_args": {"client_num_in_total": 4, "client_num_per_round": 4, "comm_round": 1, "batch_size": 4},
        "attack_args": {"enable_attack": attack is not None, "attack_type": attack,
                        "byzantine_client_num": draw(st.integers(1, 2)) if attack else 0},
        "defense_args": {"enable_defense": defense is not None, "defense_type": defense},
    }
    for kind, where, value in draw(st.lists(st.one_of(SET, SET, SET, SECTION, DROP), max_size=4)):
        if kind == "set":
            section, key = where
            if not isinstance(cfg.get(section), dict):
                cfg[section] = {}
            cfg[section][key] = value
        elif kind == "section":
            cfg[where] = value
        else:
            cfg.pop(where, None)
    return cfg


_DATA = {}


@pytest.fixture
def cached_data(monkeypatch):
    """MNIST / Fashion-MNIST read once for all examples (a run never writes into the arrays)."""
    real = workload_module.load_dataset

    def load(name, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in _DATA:
            _DATA[key] = real(name, **kwargs)
        return _DATA[key]

    monkeypatch.setattr(workload_module, "load_dataset", load)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cfg=configs())
def test_any_mapping_is_accepted_and_runs_or_is_refused_with_a_settings_error(cached_data, cfg):
    with tempfile.TemporaryDirectory() as results:
        try:
            summary = Simulation(settings_from_dict(cfg), results_dir=results).run(progress=False)
        except SettingsError:
            return
    assert summary["finished"] and summary["rounds"] == cfg["train_args"]["comm_round"] == 1


@pytest.mark.parametrize("top", [None, [], [1, 2], "text", 3, {1: {}}, {"data_args": {"dataset": "mnist"}, 2: 3}])
def test_non_mappings_and_odd_keys_are_settings_errors(top):
    with pytest.raises(SettingsError):
        settings_from_dict(top)
