"""Start-up validation of FedML-style YAML configurations: one test per kind of error."""
import textwrap

import pytest
import torch

from fedml_heterofl.fedml_bridge.args import (
    attack_from_args,
    attacker_count,
    byzantine_count,
    defense_from_args,
    fedml_args,
    malicious_client_ids,
)
from fedml_heterofl.defense.base import RoundContext
from fedml_heterofl.settings import SettingsError, load_settings, settings_from_dict

BASE = {
    "common_args": {"training_type": "simulation", "random_seed": 3},
    "data_args": {"dataset": "mnist", "partition_method": "hetero", "partition_alpha": 0.2},
    "model_args": {"model": "lr"},
    "train_args": {"client_num_in_total": 10, "client_num_per_round": 10, "comm_round": 2},
    "comm_args": {"backend": "single_process"},
    "attack_args": {"enable_attack": True, "attack_type": "sign_flip", "byzantine_client_num": 2},
    "defense_args": {"enable_defense": True, "defense_type": "heterofl", "defense_params": {"beta": 0.3}},
}


def with_(section, **kv):
    cfg = {k: dict(v) for k, v in BASE.items()}
    cfg.setdefault(section, {}).update(kv)
    return cfg


def test_valid_config_is_typed_and_flattens_for_fedml():
    s = settings_from_dict(BASE)
    assert s.defense_name == "heterofl" and s.attack_name == "sign_flip" and s.f == 2 and s.watermark
    assert s.train_args.learning_rate == 0.1 and isinstance(s.data_args.partition_alpha, float)
    args = fedml_args(s)
    assert args.random_seed == 3 and args.defense_type == "heterofl" and args.byzantine_client_num == 2
    assert args.backend == "single_process" and args.client_num_in_total == 10


def test_f_is_passed_to_rules_that_take_it():
    s = settings_from_dict(with_("defense_args", defense_type="multikrum", defense_params={}))
    assert s.defense().f == 2 and defense_from_args(fedml_args(s)).f == 2
    s = settings_from_dict(with_("defense_args", defense_type="multikrum", defense_params={"f": 1}))
    assert s.defense().f == 1 and defense_from_args(fedml_args(s)).f == 1


def test_f_reaches_the_rule_in_a_run_without_attack():
    """A server does not know whether it is attacked: Multi-Krum guards against byzantine_client_num
    (2 here) with enable_attack false too, while no client is malicious."""
    cfg = with_("defense_args", defense_type="multikrum", defense_params={})
    cfg["attack_args"] = {**cfg["attack_args"], "enable_attack": False}
    s = settings_from_dict(cfg)
    args = fedml_args(s)
    assert s.f == 0 and s.malicious_ids == () and malicious_client_ids(args) == ()
    assert defense_from_args(args).f == 2
    rule = s.defense()
    assert rule.f == 2
    # n = 10 rows: nine at 1 and one at 11; f = 2 keeps the n - f = 8 rows nearest the rest, all at 1,
    # where the plain mean (f = 0) would be (9 + 11) / 10 = 2
    updates = torch.ones(10, 3)
    updates[4] = 11.0
    ctx = RoundContext(global_params=torch.zeros(3), client_ids=torch.arange(10), sample_counts=torch.ones(10))
    result = rule(updates, ctx)
    assert result.kept.sum() == 8 and not result.kept[4] and torch.equal(result.update, torch.ones(3))
    cfg["attack_args"]["byzantine_client_num"] = 5
    with pytest.raises(SettingsError, match=r"multikrum needs f < n/2; got f=5 with n=10"):
        settings_from_dict(cfg)
    # FedML's flat args straight from a YAML (no Settings): an attack without an attacker count is an error
    del args.byzantine_client_num
    assert byzantine_count(args) == 0 and attacker_count(args) == 0
    args.enable_attack = True
    with pytest.raises(ValueError, match=r"byzantine_client_num must be an integer >= 0 when enable_attack is true"):
        attacker_count(args)


def test_label_flip_gets_the_datasets_class_count():
    s = settings_from_dict(with_("attack_args", attack_type="label_flip"))
    assert s.attack().num_classes == 10 and attack_from_args(fedml_args(s)).num_classes == 10
    with pytest.raises(SettingsError, match=r"data_args.dataset: 'svhn' is not allowed; allowed: mnist"):
        settings_from_dict(with_("data_args", dataset="svhn"))


@pytest.mark.parametrize("cfg, message", [
    ({**BASE, "wrong_args": {}}, r"unknown section 'wrong_args'; allowed: common_args"),
    (with_("train_args", lr=0.1), r"train_args.lr: unknown key; allowed: federated_optimizer.*learning_rate"),
    (with_("defense_args", defense_type="krum2"), r"defense_type: 'krum2' is not allowed; allowed: .*heterofl"),
    (with_("attack_args", attack_type="nope"), r"attack_type: 'nope' is not allowed; allowed: .*min_max"),
    (with_("attack_args", byzantine_client_num=5), r"heterofl needs f < n/2; got f=5 with n=10"),
    (with_("attack_args", byzantine_client_num=10), r"f=10 must be below client_num_in_total=10"),
    (with_("train_args", learning_rate=-0.1), r"train_args.learning_rate: must be > 0, got -0.1"),
    (with_("data_args", partition_alpha=0), r"data_args.partition_alpha: must be >= 0.01, got 0"),
    (with_("train_args", comm_round="ten"), r"train_args.comm_round: expected an integer, got 'ten'"),
    (with_("comm_args", backend="sp"), r"comm_args.backend: 'sp' is not allowed; allowed: single_process, MPI"),
    (with_("defense_args", defense_params={"beta": 2.0}), r"defense_params: beta must be in \[0, 1\]"),
    (with_("defense_args", defense_params={"gamma": 1}), r"defense_params: .*gamma"),
    (with_("train_args", client_num_per_round=20), r"client_num_per_round: 20 exceeds client_num_in_total=10"),
    (with_("attack_args", attack_type=None), r"attack_type: required when enable_attack is true"),
    (with_("tracking_args", enable_wandb=True), r"enable_tracking/enable_wandb: must be false"),
    ({"train_args": [1, 2]}, r"train_args: must be a mapping"),
    ({**BASE, "environment_args": "x"}, r"environment_args: must be a mapping"),
    (with_("data_args", max_clients=5), r"data_args.max_clients: only for dataset shakespeare, not 'mnist'"),
    (with_("data_args", max_samples_per_client=0), r"data_args.max_samples_per_client: must be >= 1, got 0"),
    (with_("train_args", client_threads=0), r"train_args.client_threads: must be >= 1, got 0"),
])
def test_bad_configs_fail_with_the_key_and_allowed_values(cfg, message):
    with pytest.raises(SettingsError, match=message):
        settings_from_dict(cfg)


def test_fedml_passthrough_keys_are_accepted(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(textwrap.dedent("""
        common_args: {training_type: simulation, using_mlops: false}
        data_args: {dataset: mnist}
        model_args: {model: lr}
        tracking_args: {enable_tracking: false, log_file_dir: ./log}
        defense_args: {enable_defense: false}
    """))
    s = load_settings(p)
    assert s.passthrough == {"common_args": {"using_mlops": False}, "tracking_args": {"log_file_dir": "./log"}}
    assert fedml_args(s).using_mlops is False and s.defense_name == "fedavg"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SettingsError, match="configuration file not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("common_args: {a: [1, 2}\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)


def test_to_dict_loads_back_to_equal_settings():
    s = settings_from_dict(with_("common_args", using_mlops=False))
    assert settings_from_dict(s.to_dict()) == s
    launched = settings_from_dict({**BASE, "environment_args": {"bootstrap": "b.sh"}})  # fedml launch adds it
    assert settings_from_dict(launched.to_dict()) == launched
    assert launched.to_dict()["environment_args"] == {"bootstrap": "b.sh"}
    assert s.to_dict()["train_args"]["client_num_in_total"] == 10
