"""Typed, validated run settings from a FedML-style YAML: the run spec every layer reads
(``docs/architecture.md``).

The YAML uses FedML's section names (``common_args``, ``data_args``, ``model_args``, ``train_args``,
``validation_args``, ``device_args``, ``comm_args``, ``tracking_args``, ``attack_args``,
``defense_args``). FedML itself flattens every key onto one ``args`` namespace; we keep the sections
as typed dataclasses, check every key at start-up and fail with one message that names the key and
the allowed values. :meth:`Settings.flat` is FedML's flat view (made into FedML's ``args`` only by
:mod:`fedml_heterofl.fedml_bridge.args`).

What is refused: an empty file or one that is not a mapping of sections; a configuration without
``data_args.dataset`` and ``model_args.model`` (:data:`REQUIRED`); a model that does not take the
dataset's inputs (:data:`MODEL_DATASETS`); any number that is not finite or does not fit a 64-bit
integer, anywhere (attack and defense parameters included); numbers out of their range (seed,
Dirichlet q, learning rate > 0, momentum in [0, 1), counts >= 1, ...); a ``run_name`` that is not a
plain folder name. :func:`check_dry_round` (called by a run's start-up, not here) checks that the
attack and defense work with the run's n and f. :attr:`Settings.identity` is the run's identity for
resuming (:func:`fingerprint` of every setting that can change a number).

Keys FedML reads but the standalone simulator does not use (e.g. ``using_mlops``) are accepted in
their usual section and passed through to FedML unchanged (``FEDML_PASSTHROUGH``).

Attack and defense parameters are the keyword arguments of the attack/defense classes, given as a
mapping (``attack_params`` / ``defense_params``); they are checked against the class's signature and
by building the object once at start-up by :mod:`fedml_heterofl.components` (the same code FedML's
processes use; an unknown name is listed with the accepted ones): the attacker
count is FedML's ``byzantine_client_num``; rules that take ``f`` get it from there unless
``defense_params`` sets ``f``, with or without an attack (a server does not know whether it is attacked).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import operator
import os
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple, Union


from fedml_heterofl import components
from fedml_heterofl.attack.base import choose_attackers
from fedml_heterofl.data.catalog import DATASETS
from fedml_heterofl.defense.base import Defense
from fedml_heterofl.fingerprint import fingerprint
from fedml_heterofl.models import MODELS
from fedml_heterofl.yaml_input import YamlInputError, number_hint, read_yaml

#: L, the number of real classes of each dataset (its :class:`~fedml_heterofl.data.dataset.DatasetSpec`)
NUM_CLASSES: Dict[str, int] = {name: spec.num_classes for name, spec in DATASETS.items()}
#: the datasets whose inputs each model takes (the datasets' ``models``)
MODEL_DATASETS: Dict[str, Tuple[str, ...]] = {
    model: tuple(name for name, spec in DATASETS.items() if model in spec.models) for model in MODELS
}
#: the largest run seed: FedML seeds numpy's legacy generator with it (``np.random.seed`` takes < 2**32)
MAX_SEED = 2**32 - 1
#: the smallest Dirichlet concentration: below it numpy's sampler underflows for few clients (every share
#: 0, i.e. NaN proportions; seen at 0.002 with 2 clients) and the partition is no longer a Dirichlet draw
MIN_PARTITION_ALPHA = 0.01
#: the largest trigger set |D_trg| (paper: 4): its rows join every client's training data
MAX_TRIGGER_SIZE = 10_000


class SettingsError(ValueError):
    """A configuration error; the message names the key and what is allowed."""


_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _choice(section: str, key: str, value: Any, allowed: typing.Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise SettingsError(f"{section}.{key}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _bounds(section: str, key: str, value: Union[int, float], *, gt: Optional[float] = None,
            ge: Optional[float] = None, lt: Optional[float] = None, le: Optional[float] = None) -> None:
    """``SettingsError`` unless ``value`` is within every given bound (the message lists them)."""
    limits = [(op, bound) for op, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if bound is not None]
    if not all(_COMPARE[op](value, bound) for op, bound in limits):
        raise SettingsError(f"{section}.{key}: must be {' and '.join(f'{op} {b}' for op, b in limits)}, got {value!r}")


def _plain_name(section: str, key: str, name: str) -> None:
    """``SettingsError`` unless ``name`` is one folder name (no path separators, not ``.``/``..``, no
    control characters, at most 255 bytes, no surrounding blanks): the run folder stays inside
    ``results_dir``."""
    if (name in (".", "..") or any(sep in name for sep in ("/", "\\")) or name != name.strip()
            or any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name.encode("utf-8", "replace")) > 255):
        raise SettingsError(f"{section}.{key}: {name!r} is not a plain folder name; allowed: one name of at most "
                            "255 bytes without '/', '\\', control characters or surrounding blanks, not '.' or '..'")


@dataclass(frozen=True)
class CommonArgs:
    """``common_args``: run identity and seed."""

    training_type: str = "simulation"
    scenario: str = "horizontal"
    random_seed: int = 0
    run_name: Optional[str] = None
    results_dir: str = "results"

    def __post_init__(self) -> None:
        _choice("common_args", "training_type", self.training_type, ("simulation", "cross_silo"))
        _choice("common_args", "scenario", self.scenario, ("horizontal",))
        _bounds("common_args", "random_seed", self.random_seed, ge=0, le=MAX_SEED)
        if self.run_name:
            _plain_name("common_args", "run_name", self.run_name)
        if not self.results_dir:
            raise SettingsError("common_args.results_dir: must be a folder path, got an empty string")


@dataclass(frozen=True)
class DataArgs:
    """``data_args``: dataset, partition, HeteroFL's trigger set and the server's own data."""

    dataset: str = "mnist"
    data_cache_dir: Optional[str] = None
    partition_method: str = "hetero"
    #: Dirichlet concentration q of the LDA partition (paper §VII-A: q = 0.2)
    partition_alpha: float = 0.2
    #: |D_trg| (paper: 4)
    trigger_size: int = 4
    #: FLTrust's root dataset size (Cao et al.: 100)
    root_size: int = 100
    #: Zeno's validation batch size (Xie et al. use small batches; 32 keeps the score stable)
    validation_size: int = 32
    #: Shakespeare only: keep the clients with the most samples
    max_clients: Optional[int] = None
    #: at most this many training samples per client, to scale a run down (any dataset: a seeded random
    #: subset of each larger partition; Shakespeare: evenly spaced windows, chosen at load)
    max_samples_per_client: Optional[int] = None

    def load_options(self) -> Dict[str, int]:
        """Options for :func:`fedml_heterofl.data.load_dataset`."""
        if self.dataset != "shakespeare":
            return {}
        return {k: v for k, v in (("max_clients", self.max_clients),
                                  ("max_samples_per_client", self.max_samples_per_client)) if v is not None}

    def __post_init__(self) -> None:
        _choice("data_args", "dataset", self.dataset, NUM_CLASSES)
        _choice("data_args", "partition_method", self.partition_method, ("hetero", "homo", "natural"))
        if self.partition_method == "natural" and self.dataset != "shakespeare":
            raise SettingsError(f"data_args.partition_method: 'natural' needs a dataset with natural clients, "
                                f"which {self.dataset} has not; allowed for it: hetero, homo")
        _bounds("data_args", "partition_alpha", self.partition_alpha, ge=MIN_PARTITION_ALPHA)
        _bounds("data_args", "trigger_size", self.trigger_size, ge=1, le=MAX_TRIGGER_SIZE)
        _bounds("data_args", "root_size", self.root_size, ge=1)
        _bounds("data_args", "validation_size", self.validation_size, ge=1)
        for key in ("max_clients", "max_samples_per_client"):
            if getattr(self, key) is not None:
                _bounds("data_args", key, getattr(self, key), ge=1)
                if key == "max_clients" and self.dataset != "shakespeare":
                    raise SettingsError(f"data_args.{key}: only for dataset shakespeare, not {self.dataset!r}")


@dataclass(frozen=True)
class ModelArgs:
    """``model_args``: architecture; the watermark output is added whenever the defense is HeteroFL."""

    model: str = "lr"

    def __post_init__(self) -> None:
        _choice("model_args", "model", self.model, MODEL_DATASETS)


@dataclass(frozen=True)
class TrainArgs:
    """``train_args``: FedML's training keys."""

    federated_optimizer: str = "FedAvg"
    client_num_in_total: int = 100
    client_num_per_round: int = 100
    comm_round: int = 50
    epochs: int = 1
    batch_size: int = 32
    client_optimizer: str = "sgd"
    learning_rate: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.0
    #: train many clients in one vmapped pass (models without dropout/batch norm); null = when possible, except
    #: for models whose clients train faster one per core on a CPU (the RNN, see models.RNN)
    vectorised_training: Optional[bool] = None
    #: clients per vectorised pass (memory: about chunk x d parameters and gradients)
    vectorised_chunk: int = 100
    #: clients trained at once in threads when not vectorised, one intra-op thread each; null = torch's
    #: intra-op thread count on a CPU (1 on a GPU); 1 = one client after another on all intra-op threads
    client_threads: Optional[int] = None

    def __post_init__(self) -> None:
        _choice("train_args", "federated_optimizer", self.federated_optimizer, ("FedAvg",))
        _choice("train_args", "client_optimizer", self.client_optimizer, ("sgd",))
        for key in ("client_num_in_total", "client_num_per_round", "comm_round", "epochs", "batch_size",
                    "vectorised_chunk"):
            _bounds("train_args", key, getattr(self, key), ge=1)
        if self.client_threads is not None:
            _bounds("train_args", "client_threads", self.client_threads, ge=1)
        _bounds("train_args", "learning_rate", self.learning_rate, gt=0)
        _bounds("train_args", "weight_decay", self.weight_decay, ge=0)
        _bounds("train_args", "momentum", self.momentum, ge=0, lt=1)
        if self.client_num_per_round > self.client_num_in_total:
            raise SettingsError(
                f"train_args.client_num_per_round: {self.client_num_per_round} exceeds "
                f"client_num_in_total={self.client_num_in_total}")


@dataclass(frozen=True)
class ValidationArgs:
    """``validation_args``: evaluate the global model every ``frequency_of_the_test`` rounds."""

    frequency_of_the_test: int = 1

    def __post_init__(self) -> None:
        _bounds("validation_args", "frequency_of_the_test", self.frequency_of_the_test, ge=1)


@dataclass(frozen=True)
class DeviceArgs:
    """``device_args``: CPU by default; ``using_gpu`` uses ``cuda:gpu_id`` with no code change."""

    using_gpu: bool = False
    gpu_id: int = 0
    gpu_mapping_file: Optional[str] = None
    gpu_mapping_key: Optional[str] = None

    def __post_init__(self) -> None:
        _bounds("device_args", "gpu_id", self.gpu_id, ge=0)


@dataclass(frozen=True)
class CommArgs:
    """``comm_args``: ``single_process`` (our standalone simulator) or ``MPI`` (FedML cross-silo)."""

    backend: str = "single_process"

    def __post_init__(self) -> None:
        _choice("comm_args", "backend", self.backend, ("single_process", "MPI"))


@dataclass(frozen=True)
class TrackingArgs:
    """``tracking_args``: FedML's tracking stays off (it needs the network); ``log_level`` is ours."""

    enable_tracking: bool = False
    enable_wandb: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.enable_tracking or self.enable_wandb:
            raise SettingsError("tracking_args.enable_tracking/enable_wandb: must be false "
                                "(FedML's tracking needs the network); allowed: false")
        _choice("tracking_args", "log_level", self.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class AttackArgs:
    """``attack_args``: ``byzantine_client_num`` fixed attackers (seeded, the same all run)."""

    enable_attack: bool = False
    attack_type: Optional[str] = None
    byzantine_client_num: int = 0
    attack_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _bounds("attack_args", "byzantine_client_num", self.byzantine_client_num, ge=0)
        if self.enable_attack and not self.attack_type:
            raise SettingsError("attack_args.attack_type: required when enable_attack is true")
        if self.enable_attack and self.byzantine_client_num == 0:
            raise SettingsError("attack_args.byzantine_client_num: must be >= 1 when enable_attack is true")


@dataclass(frozen=True)
class DefenseArgs:
    """``defense_args``: the aggregation rule (FedAvg when ``enable_defense`` is false)."""

    enable_defense: bool = False
    defense_type: Optional[str] = None
    defense_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.enable_defense and not self.defense_type:
            raise SettingsError("defense_args.defense_type: required when enable_defense is true")


SECTIONS: Dict[str, type] = {
    "common_args": CommonArgs,
    "data_args": DataArgs,
    "model_args": ModelArgs,
    "train_args": TrainArgs,
    "validation_args": ValidationArgs,
    "device_args": DeviceArgs,
    "comm_args": CommArgs,
    "tracking_args": TrackingArgs,
    "attack_args": AttackArgs,
    "defense_args": DefenseArgs,
}

#: keys every configuration sets (an empty or near-empty file is a mistake, not a run of defaults):
#: (section, key) -> allowed values
REQUIRED: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("data_args", "dataset"): tuple(NUM_CLASSES),
    ("model_args", "model"): tuple(MODEL_DATASETS),
}

#: settings that place or name a run, or set its console verbosity, but change none of its numbers: left
#: out of :attr:`Settings.identity` (a run folder moved to another results_dir still resumes)
IDENTITY_EXCLUDED: Tuple[Tuple[str, str], ...] = (
    ("common_args", "results_dir"), ("common_args", "run_name"), ("data_args", "data_cache_dir"),
    ("tracking_args", "log_level"))

#: FedML keys accepted in each section and handed to FedML unchanged (the simulator ignores them).
FEDML_PASSTHROUGH: Dict[str, Tuple[str, ...]] = {
    "common_args": ("using_mlops", "config_version", "mlops_api_key", "mlops_project_name", "mlops_run_name"),
    "train_args": ("client_id_list", "server_optimizer", "server_lr"),
    "device_args": ("worker_num", "device_type", "process_num"),
    "comm_args": ("is_mobile", "grpc_ipconfig_path", "mqtt_config_path", "s3_config_path"),
    "tracking_args": ("log_file_dir", "enable_profiling"),
}

#: FedML sections that only FedML's platform tooling reads (``fedml launch`` writes
#: ``environment_args.bootstrap`` into the config it packages): accepted, kept and not used here.
FEDML_PLATFORM_SECTIONS: Tuple[str, ...] = ("environment_args",)


@dataclass(frozen=True)
class Settings:
    """All sections of one run, typed and validated."""

    common_args: CommonArgs = CommonArgs()
    data_args: DataArgs = DataArgs()
    model_args: ModelArgs = ModelArgs()
    train_args: TrainArgs = TrainArgs()
    validation_args: ValidationArgs = ValidationArgs()
    device_args: DeviceArgs = DeviceArgs()
    comm_args: CommArgs = CommArgs()
    tracking_args: TrackingArgs = TrackingArgs()
    attack_args: AttackArgs = AttackArgs()
    defense_args: DefenseArgs = DefenseArgs()
    #: section -> FedML keys passed through unchanged (:data:`FEDML_PASSTHROUGH`)
    passthrough: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def defense_name(self) -> str:
        """The aggregation rule in force (``fedavg`` when no defense is enabled)."""
        return components.defense_in_force(self.defense_args.enable_defense, self.defense_args.defense_type)

    @property
    def attack_name(self) -> Optional[str]:
        """The attack in force, or ``None``."""
        return components.attack_in_force(self.attack_args.enable_attack, self.attack_args.attack_type)

    @property
    def f(self) -> int:
        """Number of fixed malicious clients (0 without an attack)."""
        return self.attack_args.byzantine_client_num if self.attack_args.enable_attack else 0

    @property
    def malicious_ids(self) -> Tuple[int, ...]:
        """The f fixed attackers (:func:`~fedml_heterofl.attack.choose_attackers` seeded by the run seed):
        the same ids in every process and on every backend, never re-drawn."""
        return choose_attackers(self.train_args.client_num_in_total, self.f, self.common_args.random_seed)

    def defense(self) -> Defense:
        """The run's aggregation rule (:func:`~fedml_heterofl.components.build_run_defense`: ``f`` is
        ``byzantine_client_num`` with or without an attack; ``defense_params`` only when enabled)."""
        params = self.defense_args.defense_params if self.defense_args.enable_defense else {}
        return components.build_run_defense(self.defense_name, params, self.attack_args.byzantine_client_num,
                                            self.flat().get)

    def attack(self) -> Any:
        """The run's attack (:func:`~fedml_heterofl.components.build_run_attack`), or ``None``."""
        return components.build_run_attack(self.attack_name, self.attack_args.attack_params, self.num_classes)

    @property
    def sgd(self) -> Dict[str, Any]:
        """The clients' local-training keywords (:func:`~fedml_heterofl.components.sgd_keywords`)."""
        t = self.train_args
        return components.sgd_keywords(t.client_optimizer, t.epochs, t.batch_size, t.learning_rate, t.momentum,
                                       t.weight_decay)

    @property
    def num_classes(self) -> int:
        """L, the dataset's number of real classes."""
        return NUM_CLASSES[self.data_args.dataset]

    @property
    def identity(self) -> str:
        """The run's identity: :func:`fingerprint` of every setting (:meth:`to_dict`) except those
        that only place or name the run (:data:`IDENTITY_EXCLUDED`). Two settings that differ in any
        value that can change a number have different identities, so they never share a checkpoint."""
        config = self.to_dict()
        for section, key in IDENTITY_EXCLUDED:
            config[section].pop(key)
        return fingerprint(config)

    @property
    def watermark(self) -> bool:
        """Whether the model carries HeteroFL's (L+1)-th output: iff the defense is HeteroFL."""
        return self.defense_name == "heterofl"

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """The settings as a FedML-style YAML mapping (every key, defaults included; loads back to
        equal settings)."""
        out = {name: {**dataclasses.asdict(getattr(self, name)), **self.passthrough.get(name, {})}
               for name in SECTIONS}
        out.update({name: dict(self.passthrough[name]) for name in FEDML_PLATFORM_SECTIONS
                    if name in self.passthrough})
        return out

    def flat(self) -> Dict[str, Any]:
        """Every key of every section in one mapping, as FedML flattens a YAML (section keys are unique)."""
        flat: Dict[str, Any] = {}
        for body in self.to_dict().values():
            flat.update(body)
        return flat


def _check_number(where: str, value: Any) -> None:
    """``SettingsError`` for a number that is not finite or does not fit a 64-bit integer, also inside
    lists and mappings (attack and defense parameters)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{where}: must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
        raise SettingsError(f"{where}: {value} does not fit a 64-bit integer; allowed: -2**63 to 2**63 - 1")
    if isinstance(value, Mapping):
        for name, item in value.items():
            _check_number(f"{where}.{name}", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_number(f"{where}[{i}]", item)


@functools.lru_cache(maxsize=None)
def _section_hints(section: str) -> Dict[str, Any]:
    """The resolved field types of one settings section (resolving them is slow; they never change)."""
    return typing.get_type_hints(SECTIONS[section])


def _coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's type (ints are accepted for floats)."""
    hint = _section_hints(section)[key] if isinstance(annotation, str) else annotation
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{section}.{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{section}.{key}: expected an integer, got {value!r}{number_hint(value)}")
        _check_number(f"{section}.{key}", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{section}.{key}: expected a number, got {value!r}{number_hint(value)}")
        _check_number(f"{section}.{key}", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"{section}.{key}: expected a string, got {value!r}")
        return value
    if origin in (collections.abc.Mapping, dict) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise SettingsError(f"{section}.{key}: expected a mapping of parameter names to values, got {value!r}")
        for name, param in value.items():
            if not isinstance(name, str):
                raise SettingsError(f"{section}.{key}: parameter names must be strings, got {name!r}")
            _check_number(f"{section}.{key}.{name}", param)
        return dict(value)
    return value


def settings_from_dict(config: Mapping[str, Any]) -> Settings:
    """Validate a parsed FedML-style YAML mapping into :class:`Settings`.

    Raises :class:`SettingsError` naming the first offending key and the allowed values.
    """
    if not isinstance(config, Mapping):
        raise SettingsError(f"the configuration must be a mapping of sections ({', '.join(SECTIONS)}), "
                            f"got {type(config).__name__}")
    unknown = sorted(set(config) - set(SECTIONS) - set(FEDML_PLATFORM_SECTIONS), key=str)
    if unknown:
        raise SettingsError(f"unknown section {unknown[0]!r}; allowed: {', '.join([*SECTIONS, *FEDML_PLATFORM_SECTIONS])}")
    sections: Dict[str, Any] = {}
    passthrough: Dict[str, Any] = {}
    for name in FEDML_PLATFORM_SECTIONS:
        if name in config:
            if not isinstance(config[name], Mapping):
                raise SettingsError(f"{name}: must be a mapping of keys to values, got {config[name]!r}")
            passthrough[name] = dict(config[name])
    for name, cls in SECTIONS.items():
        body = {} if config.get(name) is None else config[name]  # an empty section in YAML is null
        if not isinstance(body, Mapping):
            raise SettingsError(f"{name}: must be a mapping of keys to values, got {body!r}")
        known = {f.name: f for f in fields(cls)}
        extra = FEDML_PASSTHROUGH.get(name, ())
        kwargs = {}
        for key, value in body.items():
            if key in known:
                kwargs[key] = _coerce(name, key, value, known[key].type)
            elif key in extra:
                passthrough.setdefault(name, {})[key] = value
            else:
                raise SettingsError(f"{name}.{key}: unknown key; allowed: {', '.join([*known, *extra])}")
        try:
            sections[name] = cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - every key was checked above
            raise SettingsError(f"{name}: {exc}") from exc
    for (name, key), allowed in REQUIRED.items():
        if key not in (config.get(name) or {}):
            raise SettingsError(f"{name}.{key}: required (a configuration names at least "
                                f"{' and '.join(map('.'.join, REQUIRED))}); allowed: {', '.join(allowed)}")
    settings = Settings(**sections, passthrough=passthrough)
    _validate_cross(settings)
    return settings


def _validate_cross(s: Settings) -> None:
    """Checks that span sections: names exist, parameters build, f fits the rule."""
    from fedml_heterofl.attack import REGISTRY as ATTACKS
    from fedml_heterofl.defense import REGISTRY as DEFENSES

    if s.defense_name not in DEFENSES:
        raise SettingsError(f"defense_args.defense_type: {s.defense_args.defense_type!r} is not allowed; "
                            f"allowed: {DEFENSES.allowed()}")
    if s.attack_name is not None and s.attack_name not in ATTACKS:
        raise SettingsError(f"attack_args.attack_type: {s.attack_args.attack_type!r} is not allowed; "
                            f"allowed: {', '.join(sorted(ATTACKS))}")
    model, dataset = s.model_args.model, s.data_args.dataset
    if dataset not in MODEL_DATASETS[model]:
        raise SettingsError(f"model_args.model: {model!r} does not take {dataset} inputs; allowed for "
                            f"{dataset}: {', '.join(m for m, sets in MODEL_DATASETS.items() if dataset in sets)}")
    # f: the attackers when attacked, and what a defense guards against either way
    n, f = s.train_args.client_num_per_round, s.attack_args.byzantine_client_num
    if f >= s.train_args.client_num_in_total:
        raise SettingsError(f"attack_args.byzantine_client_num: f={f} must be below "
                            f"client_num_in_total={s.train_args.client_num_in_total}")
    if getattr(DEFENSES[s.defense_name], "honest_majority", False) and 2 * f >= n:
        raise SettingsError(f"attack_args.byzantine_client_num: {s.defense_name} needs f < n/2; got f={f} "
                            f"with n={n} clients per round")
    for section, build in (("defense_args.defense_params", s.defense), ("attack_args.attack_params", s.attack)):
        try:
            build()
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{section}: {exc}") from exc


def check_dry_round(s: Settings) -> None:
    """:func:`components.dry_round` for ``s``: a run's start-up check that its attack and defense work
    with its n and f (not part of :func:`settings_from_dict`: the adaptive attack's oracle search costs
    up to a second, too much for validating every cell of a grid). Raises :class:`SettingsError`."""
    try:
        components.dry_round(s.defense(), s.attack(), s.train_args.client_num_per_round,
                             s.train_args.client_num_in_total, s.f)
    except ValueError as exc:
        raise SettingsError(f"defense_args/attack_args with n={s.train_args.client_num_per_round} clients per "
                            f"round and f={s.f} attackers: {exc}") from exc


def load_settings(path: Union[str, os.PathLike]) -> Settings:
    """Read a FedML-style YAML file (:func:`~fedml_heterofl.yaml_input.read_yaml`: bounded, no aliases
    or repeated keys) into :class:`Settings`; an empty file or one that is not a mapping of sections is
    refused."""
    try:
        config = read_yaml(path)
    except YamlInputError as exc:
        raise SettingsError(str(exc)) from None
    if config is None:
        raise SettingsError(f"{path}: the file is empty; a configuration is a mapping of sections "
                            f"({', '.join(SECTIONS)}) that names at least {' and '.join(map('.'.join, REQUIRED))}")
    if not isinstance(config, Mapping):
        raise SettingsError(f"{path}: must be a mapping of sections ({', '.join(SECTIONS)}), "
                            f"got {type(config).__name__}")
    try:
        return settings_from_dict(config)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
