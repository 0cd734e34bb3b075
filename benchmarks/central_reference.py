"""Centralised reference for a scaled-down grid: the grid's model trained on the union of its clients'
training data, as one client would (same SGD settings: batch size, learning rate), epoch by epoch,
with the test accuracy after each epoch.

It answers "how far can a federated run at this scale get, and after how many SGD steps?" without
any attack or defense: a Table I cell whose FedAvg accuracy sits far below this curve is limited by
its scale (rounds, samples), not by the rule under test. The most frequent test label's share is
printed beside it: a model that always predicts it (e.g. the space character on Shakespeare) scores
exactly that.

The cell (default: the grid's first) gives the dataset, the clients' partitions (capped as in the
grid), the model and the SGD settings; its attack and defense play no part (the clean partitions are
used, without HeteroFL's trigger rows or a data attack's labels). Seeded by the cell's seed: the same
command prints the same numbers.

Usage: ``python benchmarks/central_reference.py --cf config/grids/table1_shakespeare_rnn.yaml
[--cell NAME] [--epochs 8] [--threads 1]``
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedml_heterofl.experiments.grid import load_grid  # noqa: E402
from fedml_heterofl.record.metrics import evaluate_model  # noqa: E402
from fedml_heterofl.settings import Settings  # noqa: E402
from fedml_heterofl.simulation.local_training import client_seed, local_sgd  # noqa: E402
from fedml_heterofl.simulation.workload import build_workload  # noqa: E402

#: client id stream of the central run's seeds (clients are below 2**62, the server uses 2**62 + k)
CENTRAL_STREAM = 2**62 + 7


def pick_cell(grid: str, cell: Optional[str]) -> Settings:
    """The grid cell named ``cell``, else its first cell."""
    _, cells = load_grid(grid)
    named = dict(cells)
    if cell is None:
        return cells[0][1]
    if cell not in named:
        raise ValueError(f"grid {grid} has no cell {cell!r}; its cells: {', '.join(named)}")
    return named[cell]


def central_curve(settings: Settings, epochs: int) -> Dict[str, object]:
    """Train centrally for ``epochs``; returns the per-epoch rows and the majority-label share."""
    work = build_workload(settings)
    sgd = settings.sgd
    rows_idx = torch.cat(list(work.parts))
    x, y = work.dataset.train_x[rows_idx], work.dataset.train_y[rows_idx]
    test_x, test_y = work.test
    w = work.init_params.clone()
    steps_per_epoch = -(-len(y) // sgd["batch_size"]) * sgd["epochs"]
    rows: List[Dict[str, float]] = []
    for epoch in tqdm(range(epochs), desc="central epochs"):
        w = w + local_sgd(work.model, work.layout, w, x, y,
                          seed=client_seed(settings.common_args.random_seed, epoch, CENTRAL_STREAM), **sgd)
        work.layout.load(work.model, w)
        out = evaluate_model(work.model, test_x, test_y)
        rows.append({"epoch": epoch + 1, "sgd_steps": (epoch + 1) * steps_per_epoch,
                     "test_acc": out["test_acc"], "test_loss": out["test_loss"]})
    majority = float(torch.bincount(test_y).max()) / len(test_y)
    return {"train_samples": len(y), "test_samples": len(test_y), "majority_share": majority, "rows": rows}


def markdown(result: Dict[str, object]) -> str:
    lines = [f"central training on {result['train_samples']} samples, test on {result['test_samples']}; "
             f"the most frequent test label's share: {result['majority_share']:.4f}", "",
             "| epoch | SGD steps | test accuracy | test loss |", "|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['sgd_steps']} | {r['test_acc']:.4f} | {r['test_loss']:.4f} |"
              for r in result["rows"]]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cf", required=True, help="grid file (config/grids/NAME.yaml)")
    parser.add_argument("--cell", help="cell name, e.g. 'seed=0,defense=fedavg,attack=none'")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:
        settings = pick_cell(args.cf, args.cell)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(markdown(central_curve(settings, args.epochs)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
