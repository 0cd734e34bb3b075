"""What several test modules build or read: an MNIST/LR configuration and a run's metrics rows
(tests/ is on ``sys.path`` under pytest, so a test imports this as ``helpers``)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Mapping

import yaml

ROOT = Path(__file__).resolve().parent.parent


def mnist_lr_config(results_dir: Path, attack: str, f: int,
                    *updates: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """``config/mnist_lr.yaml`` (HeteroFL with all four steps and λ = -50) evaluated after every round,
    its results under ``results_dir``, ``f`` attackers running ``attack``; then each of ``updates``
    (``{section: {key: value}}``) in turn."""
    cfg = yaml.safe_load((ROOT / "config" / "mnist_lr.yaml").read_text())
    cfg["common_args"]["results_dir"] = str(results_dir)
    cfg["validation_args"]["frequency_of_the_test"] = 1
    cfg["attack_args"].update(attack_type=attack, byzantine_client_num=f)
    cfg["defense_args"]["defense_params"] = {"steps": [1, 2, 3, 4], "lam": -50.0}
    for update in updates:
        for section, values in update.items():
            cfg[section].update(values)
    return cfg


def read_metrics(run_dir: Path) -> List[Dict[str, str]]:
    """The rows of ``run_dir/metrics.csv`` (every value a string, as written)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))
