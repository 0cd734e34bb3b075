"""Client partitions and their heterogeneity (paper §IV, §VII-A).

* :func:`lda_partition` — the Dirichlet (LDA) split ``Dir_n(q)`` the paper uses, built on FedML's own
  per-class step ``partition_class_samples_with_dirichlet_distribution`` (FedML 0.9.6,
  ``fedml.core.data.noniid_partition``). FedML's outer function retries without end until every
  client holds ``min_size`` samples and draws from numpy's global RNG; our outer loop is seeded by the
  run's seed, restores numpy's global state afterwards, checks up front that the data can fill the
  clients, and stops after ``max_tries`` draws with an error.
* :func:`iid_partition` — a seeded random equal split; :func:`natural_partition` — given groups
  (Shakespeare's speakers); :func:`cap_partition` — at most k samples per client (a seeded random
  subset of each larger part), to scale a run down to a small machine.
* :func:`diversity` — the two heterogeneity measures of paper §IV per client: *load diversity*
  (unequal amounts of data: each client's share relative to the mean) and *label diversity* (unequal
  label distributions: distinct labels and the normalised entropy of the label histogram).
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor


def lda_partition(labels: Tensor, num_clients: int, alpha: float, seed: int, min_size: int = 10,
                  max_tries: int = 1000) -> List[Tensor]:
    """Dirichlet split of sample indices over ``num_clients`` (sorted index tensors).

    For each class, proportions ``p ~ Dir(alpha)`` over the clients assign that class's samples
    (FedML's per-class step, which also zeroes the share of clients already above the mean size);
    the whole draw is repeated until every client has at least ``min_size`` samples, as FedML does,
    but at most ``max_tries`` times.

    Why not call FedML's outer ``non_iid_partition_with_dirichlet_distribution``: it hardcodes the
    minimum of 10 and loops ``while min_size < 10`` without a bound (a hang when the data cannot fill
    the clients). Rather than patching ``np.random`` under it, we run its inner per-class step in our
    own bounded loop; for ``min_size=10`` the draws equal FedML's outer function under the same
    numpy seed (it draws nothing else), apart from its final per-client shuffle, which sorting undoes.

    Raises:
        ValueError: bad arguments; fewer than ``num_clients * min_size`` samples (checked before any
            draw); no draw in ``max_tries`` reached ``min_size`` for every client.
    """
    from fedml.core.data.noniid_partition import partition_class_samples_with_dirichlet_distribution

    n = len(labels)
    if max_tries < 1 or min_size < 0:
        raise ValueError(f"need max_tries >= 1 and min_size >= 0, got {max_tries} and {min_size}")
    if num_clients < 1 or alpha <= 0:
        raise ValueError(f"need num_clients >= 1 and alpha > 0, got {num_clients} and {alpha}")
    if n < num_clients * min_size:
        raise ValueError(f"cannot give {num_clients} clients at least {min_size} samples each from only {n} "
                         f"samples; allowed: at most {n // min_size if min_size else n} clients")
    y = labels.cpu().numpy()
    classes = np.unique(y)
    state = np.random.get_state()
    try:
        np.random.seed(seed % 2**32)
        for _ in range(max_tries):
            batches: List[list] = [[] for _ in range(num_clients)]
            smallest = 0
            for k in classes:
                batches, smallest = partition_class_samples_with_dirichlet_distribution(
                    n, alpha, num_clients, batches, np.where(y == k)[0])
            if smallest >= min_size:
                return [torch.as_tensor(sorted(b), dtype=torch.long) for b in batches]
    finally:
        np.random.set_state(state)
    raise ValueError(f"no Dirichlet draw (alpha={alpha}) gave all {num_clients} clients at least {min_size} "
                     f"samples in {max_tries} tries; raise alpha, or lower num_clients or min_size")


def iid_partition(num_samples: int, num_clients: int, seed: int) -> List[Tensor]:
    """A seeded random split into ``num_clients`` parts of (almost) equal size."""
    if num_samples < num_clients:
        raise ValueError(f"cannot split {num_samples} samples over {num_clients} clients")
    perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    return [part.sort().values for part in perm.tensor_split(num_clients)]


def cap_partition(parts: Sequence[Tensor], max_size: int, seed: int) -> List[Tensor]:
    """Each part with more than ``max_size`` indices keeps a uniformly random subset of ``max_size``
    of them (sorted; one seeded generator for all parts, drawn in part order); smaller parts stay.
    The label mix of a capped client is kept in expectation; its size, and so the load diversity of
    the partition, shrinks."""
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for part in parts:
        keep = torch.randperm(len(part), generator=g)[:max_size] if len(part) > max_size else None
        out.append(part if keep is None else part[keep].sort().values)
    return out


def natural_partition(groups: Sequence[Tensor]) -> List[Tensor]:
    """The given per-client index groups (e.g. one per speaker), checked to be disjoint."""
    parts = [torch.as_tensor(g, dtype=torch.long) for g in groups]
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    if flat.unique().numel() != flat.numel():
        raise ValueError("natural partition groups overlap: a sample belongs to two clients")
    return parts


def diversity(labels: Tensor, parts: Sequence[Tensor], num_classes: int) -> Dict[str, object]:
    """Load and label diversity of a partition (module doc).

    Returns per-client lists ``load`` (size / mean size), ``labels`` (number of distinct labels),
    ``label_entropy`` (entropy of the label histogram / log(num_classes)), ``label_diversity`` (the
    two label measures together, ``{"distinct", "entropy"}`` per client) and ``histogram``
    (clients × classes counts), plus summaries ``load_cv`` (coefficient of variation of the sizes)
    and ``mean_label_entropy``.
    """
    hist = torch.stack([torch.bincount(labels[p], minlength=num_classes)[:num_classes] for p in parts]).double()
    sizes = hist.sum(dim=1)
    prob = hist / sizes.clamp_min(1)[:, None]
    entropy = -(prob * prob.clamp_min(1e-300).log()).sum(dim=1) / math.log(num_classes)
    return {
        "load": (sizes / sizes.mean()).tolist(),
        "labels": (hist > 0).sum(dim=1).tolist(),
        "label_entropy": entropy.tolist(),
        "label_diversity": [{"distinct": int(k), "entropy": float(e)}
                            for k, e in zip((hist > 0).sum(dim=1).tolist(), entropy.tolist())],
        "histogram": hist.long().tolist(),
        "load_cv": float(sizes.std(unbiased=False) / sizes.mean()),
        "mean_label_entropy": float(entropy.mean()),
    }
