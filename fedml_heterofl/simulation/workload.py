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

:func:`client_plan` is the part every process of a run computes — who the clients are, which are
attackers, how many rows each trains on — without holding the training data; the standalone
:func:`build_workload` assembles all clients' data from it, an MPI worker only the round's share
(:meth:`ClientPlan.gather`, rows read on demand, e.g. from a
:class:`~fedml_heterofl.data.cache.DatasetCache`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from fedml_heterofl.attack import DataAttack
from fedml_heterofl.data import Dataset, load_dataset, verify_installed
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


#: reads training rows: ``read_rows(index) -> (train_x[index], train_y[index])``
RowReader = Callable[[Tensor], Batch]


@dataclass
class ClientPlan:
    """The clients of a run without their training data (module doc).

    Attributes:
        parts: each client's rows of the clean training set (its partition).
        malicious: the fixed attacker ids; data_attack: the data attack they run, or ``None``.
        trigger_set: ``D_trg`` appended to every client's rows, or ``None``.
        heterogeneity: load and label diversity of the partition.
    """

    parts: List[Tensor]
    malicious: Tuple[int, ...]
    data_attack: Optional[DataAttack]
    trigger_set: Optional[Batch]
    heterogeneity: Dict[str, object]

    @property
    def sample_counts(self) -> Tensor:
        """Each client's number of training rows (trigger rows included), as :attr:`Workload.sample_counts`."""
        extra = 0 if self.trigger_set is None else len(self.trigger_set[1])
        return torch.tensor([len(ix) + extra for ix in self.parts], dtype=torch.float32)

    def gather(self, clients: Sequence[int], read_rows: RowReader) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """The training data of ``clients`` only: ``(x, y, index)`` with client ``clients[i]`` training on
        rows ``index[i]`` of ``(x, y)`` — its partition's rows, then the trigger rows, which all clients
        share. The data attack poisons each attacker's rows; for attacks that transform row by row (label
        flipping) these are exactly :func:`build_workload`'s rows, which poisons all attackers at once.

        Rows are read one client at a time into ``x``, which is allocated once with room for the
        trigger rows: the peak memory is ``x`` plus one client's rows."""
        rows = [self.parts[int(c)] for c in clients]
        sizes = [len(r) for r in rows]
        trig = 0 if self.trigger_set is None else len(self.trigger_set[1])
        empty_x, empty_y = read_rows(torch.zeros(0, dtype=torch.long))  # shapes and dtypes
        x = empty_x.new_empty((sum(sizes) + trig,) + tuple(empty_x.shape[1:]))
        y = empty_y.new_empty((sum(sizes) + trig,))
        index, start = [], 0
        for c, r in zip(clients, rows):
            xc, yc = read_rows(r)
            if self.data_attack is not None and int(c) in self.malicious:
                xc, yc = self.data_attack.poison(xc, yc)
            x[start:start + len(r)], y[start:start + len(r)] = xc, yc
            index.append(torch.arange(start, start + len(r)))
            start += len(r)
        if self.trigger_set is not None:
            x[start:], y[start:] = self.trigger_set[0].to(x.dtype), self.trigger_set[1].to(y.dtype)
            extra = torch.arange(start, start + trig)
            index = [torch.cat([ix, extra]) for ix in index]
        return x, y, index


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


def server_data(settings: Settings, data: Dataset, read_rows: Optional[RowReader] = None) -> Tuple[Batch, Batch]:
    """FLTrust's root set (``root_size``) and Zeno's validation batch (``validation_size``), read with
    ``read_rows`` (default: indexing ``data``)."""
    rng = np.random.default_rng(np.random.SeedSequence([settings.common_args.random_seed, SERVER_DATA_STREAM]))
    n = len(data.train_y)
    root = torch.from_numpy(rng.choice(n, size=min(settings.data_args.root_size, n), replace=False))
    val = torch.from_numpy(rng.choice(n, size=min(settings.data_args.validation_size, n), replace=False))
    read = read_rows or (lambda ix: (data.train_x[ix], data.train_y[ix]))
    return read(root), read(val)


def attackers_data(parts: Sequence[Tensor], malicious: Sequence[int], read_rows: RowReader) -> Optional[Batch]:
    """The attackers' own training samples: the rows of their partitions (``parts``), read with
    ``read_rows``, clean (a model attack, which uses them, runs no data attack); ``None`` without attackers."""
    if not malicious:
        return None
    return read_rows(torch.cat([parts[i] for i in malicious]))


def initial_model(settings: Settings, num_classes: int) -> nn.Module:
    """The model with seeded initial weights (the watermark output iff HeteroFL runs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.common_args.random_seed)
        return build_model(settings.model_args.model, num_classes=num_classes, watermark=settings.watermark)


def client_plan(settings: Settings, data: Dataset) -> ClientPlan:
    """Partition, attackers, data attack, trigger set and partition statistics (module doc); reads only
    ``data``'s labels (and natural groups), shapes and value range."""
    attack = settings.attack()
    trig = trigger_set(settings, data) if settings.watermark else None
    parts = partition(settings, data)
    return ClientPlan(parts, settings.malicious_ids, attack if isinstance(attack, DataAttack) else None,
                      trig, diversity(data.train_y, parts, data.num_classes))


def build_workload(settings: Settings, data: Optional[Dataset] = None) -> Workload:
    """Verify and load (unless ``data`` is given), partition, poison and assemble a run's data and model
    (module doc)."""
    if data is None:
        verify_installed(settings.data_args.dataset, settings.data_args.data_cache_dir)
        data = load_dataset(settings.data_args.dataset, root=settings.data_args.data_cache_dir,
                            **settings.data_args.load_options())
    plan = client_plan(settings, data)
    parts, malicious, trig = plan.parts, plan.malicious, plan.trigger_set
    x, y = data.train_x, data.train_y
    if plan.data_attack is not None and malicious:
        rows = torch.cat([parts[i] for i in malicious])
        xr = x[rows]
        px, py = plan.data_attack.poison(xr, y[rows])
        if px is not xr:  # input poisoning: a copy of x (label flipping leaves x shared)
            x = x.index_put((rows,), px)
        y = y.index_put((rows,), py)
    client_index = list(parts)
    if trig is not None:
        start = len(y)
        x, y = torch.cat([x, trig[0].to(x.dtype)]), torch.cat([y, trig[1].to(y.dtype)])
        extra = torch.arange(start, start + len(trig[1]))
        client_index = [torch.cat([ix, extra]) for ix in parts]
    root, validation = server_data(settings, data)
    model = initial_model(settings, data.num_classes)
    layout = ParamLayout(model)
    stats = plan.heterogeneity
    log.info("%s: %d clients (load CV %.2f, mean label entropy %.2f), %d attackers %s, d=%d", data.name, len(parts),
             stats["load_cv"], stats["mean_label_entropy"], len(malicious), list(malicious), layout.d)
    return Workload(data, x, y, parts, client_index, (data.test_x, data.test_y), trig, root, validation, malicious,
                    model, layout, layout.flatten(model), stats)
