"""Everything a run needs besides the loop, built once from :class:`~fedml_heterofl.settings.Settings`
and identical on both backends (the standalone simulator and FedML's MPI processes): the dataset,
the seeded client partition, the fixed attackers and their poisoned data, HeteroFL's trigger set,
the server's own data and the initial model.

Random choices and their seeds (all from ``common_args.random_seed``, never the global RNG):

* partition: :func:`~fedml_heterofl.data.partition.lda_partition` seeded by the run seed;
* attackers: :func:`~fedml_heterofl.attack.choose_attackers`;
* trigger set (Alg. 1, lines 1-3): :func:`~fedml_heterofl.data.trigger.make_trigger_set`;
* server data: FLTrust's root set and Zeno's validation batch are drawn from the training data by
  a generator on stream :data:`SERVER_DATA_STREAM` (Cao et al. sample the root set from the
  training distribution; every client also keeps its own copy);
* the model's initial weights: ``torch.manual_seed(seed)`` inside ``fork_rng``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from fedml_heterofl import components
from fedml_heterofl.attack import DataAttack
from fedml_heterofl.data import Dataset, load_dataset
from fedml_heterofl.data.partition import cap_partition, diversity, iid_partition, lda_partition, natural_partition
from fedml_heterofl.data.trigger import make_trigger_set
from fedml_heterofl.defense.base import Batch
from fedml_heterofl.models import ParamLayout, build_model
from fedml_heterofl.settings import Settings, SettingsError

log = logging.getLogger(__name__)

#: SeedSequence stream of the server's own data draw
SERVER_DATA_STREAM = 2**62 + 4


@dataclass
class Workload:
    """A run's data and model.

    Attributes:
        x, y: every client's training inputs and (poisoned, for a data attack) labels, with the
            trigger set appended at the end when HeteroFL runs.
        parts: each client's rows of the clean ``dataset.train_x``/``train_y`` (its partition).
        client_index: rows of ``x``/``y`` each client trains on (its partition, then the trigger rows).
        test: the test set; trigger_set: ``D_trg`` or ``None``.
        root, validation: FLTrust's root data and Zeno's validation batch (server side).
        malicious: the fixed attacker ids; model/layout: the architecture and its flat layout;
        init_params: ``w_0``; heterogeneity: load and label diversity of the partition
            (:func:`~fedml_heterofl.data.partition.diversity`).
    """

    dataset: Dataset
    x: Tensor
    y: Tensor
    parts: List[Tensor]
    client_index: List[Tensor]
    test: Batch
    trigger_set: Optional[Batch]
    root: Batch
    validation: Batch
    malicious: Tuple[int, ...]
    model: nn.Module
    layout: ParamLayout
    init_params: Tensor
    heterogeneity: Dict[str, object]

    @property
    def sample_counts(self) -> Tensor:
        """Each client's number of training rows (trigger rows included)."""
        return torch.tensor([len(ix) for ix in self.client_index], dtype=torch.float32)


def partition(settings: Settings, data: Dataset) -> List[Tensor]:
    """The clients' training indices by ``data_args.partition_method`` (hetero = LDA with q), each
    hetero/homo part capped at ``data_args.max_samples_per_client`` when set (Shakespeare's loader
    caps its natural clients itself)."""
    n = settings.train_args.client_num_in_total
    seed = settings.common_args.random_seed
    method = settings.data_args.partition_method
    cap = settings.data_args.max_samples_per_client
    if method in ("hetero", "homo"):
        try:
            parts = (lda_partition(data.train_y, n, settings.data_args.partition_alpha, seed) if method == "hetero"
                     else iid_partition(len(data.train_y), n, seed))
        except ValueError as exc:  # the data cannot fill n clients (LDA: 10 samples each)
            keys = "train_args.client_num_in_total" + (", data_args.partition_alpha" if method == "hetero" else "")
            raise SettingsError(f"{keys}: {data.name} ({len(data.train_y)} training samples): {exc}") from None
        return parts if cap is None else cap_partition(parts, cap, seed)
    if data.train_groups is None:
        raise SettingsError(f"data_args.partition_method: 'natural' needs a dataset with natural clients; "
                            f"{data.name} has none; allowed for it: hetero, homo")
    groups = natural_partition(data.train_groups)
    if len(groups) < n:
        raise SettingsError(f"train_args.client_num_in_total: {data.name} has {len(groups)} natural clients, "
                            f"fewer than the {n} requested; allowed: at most {len(groups)}")
    return groups[:n]


def trigger_set(settings: Settings, data: Dataset) -> Batch:
    """``D_trg``: ``trigger_size`` random inputs of the data's own shape and range, labelled L."""
    size, seed, L = settings.data_args.trigger_size, settings.common_args.random_seed, data.num_classes
    if data.kind == "text":
        return make_trigger_set(size, L, seed, vocab_size=int(data.value_range[1]), seq_len=data.train_x.shape[1])
    return make_trigger_set(size, L, seed, shape=tuple(data.train_x.shape[1:]), value_range=data.value_range)


def server_data(settings: Settings, data: Dataset) -> Tuple[Batch, Batch]:
    """FLTrust's root set (``root_size``) and Zeno's validation batch (``validation_size``)."""
    rng = np.random.default_rng(np.random.SeedSequence([settings.common_args.random_seed, SERVER_DATA_STREAM]))
    n = len(data.train_y)
    root = torch.from_numpy(rng.choice(n, size=min(settings.data_args.root_size, n), replace=False))
    val = torch.from_numpy(rng.choice(n, size=min(settings.data_args.validation_size, n), replace=False))
    return (data.train_x[root], data.train_y[root]), (data.train_x[val], data.train_y[val])


def initial_model(settings: Settings, num_classes: int) -> nn.Module:
    """The model with seeded initial weights (the watermark output iff HeteroFL runs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.common_args.random_seed)
        return build_model(settings.model_args.model, num_classes=num_classes, watermark=settings.watermark)


def build_workload(settings: Settings) -> Workload:
    """Load, partition, poison and assemble a run's data and model (module doc)."""
    data = load_dataset(settings.data_args.dataset, root=settings.data_args.data_cache_dir,
                        **settings.data_args.load_options())
    parts = partition(settings, data)
    args = settings.to_fedml_args()
    malicious = components.malicious_client_ids(args)
    attack = components.attack_from_args(args)
    x, y = data.train_x, data.train_y
    if isinstance(attack, DataAttack) and malicious:
        rows = torch.cat([parts[i] for i in malicious])
        xr = x[rows]
        px, py = attack.poison(xr, y[rows])
        if px is not xr:  # input poisoning: a copy of x (label flipping leaves x shared)
            x = x.index_put((rows,), px)
        y = y.index_put((rows,), py)
    trig = trigger_set(settings, data) if settings.watermark else None
    client_index = list(parts)
    if trig is not None:
        start = len(y)
        x, y = torch.cat([x, trig[0].to(x.dtype)]), torch.cat([y, trig[1].to(y.dtype)])
        extra = torch.arange(start, start + len(trig[1]))
        client_index = [torch.cat([ix, extra]) for ix in parts]
    root, validation = server_data(settings, data)
    model = initial_model(settings, data.num_classes)
    layout = ParamLayout(model)
    stats = diversity(data.train_y, parts, data.num_classes)
    log.info("%s: %d clients (load CV %.2f, mean label entropy %.2f), %d attackers %s, d=%d", data.name, len(parts),
             stats["load_cv"], stats["mean_label_entropy"], len(malicious), list(malicious), layout.d)
    return Workload(data, x, y, parts, client_index, (data.test_x, data.test_y), trig, root, validation, malicious,
                    model, layout, layout.flatten(model), stats)
