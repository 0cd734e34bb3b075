"""Cross-silo MPI smoke run of the FedML bridge on a tiny synthetic problem (3 clients).

    mpirun --allow-run-as-root --oversubscribe -np 4 python tests/mpi_smoke_main.py OUT_DIR [--fail RANK:ROUND:HOW]

Rank 0 (server) writes ``OUT_DIR/result.json``: the aggregator's history and the final global
parameters. ``--fail R:T:raise`` makes rank R raise in round T, ``--fail R:T:kill`` makes it SIGKILL
itself (the job must then end non-zero, not hang). ``tests/test_fedml_bridge.py`` imports
:func:`make_args`, :func:`make_model` and :func:`make_dataset` to run the same problem in-process.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any, List, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLIENTS = 3
CLASSES = 3
FEATURES = 4


def make_args(**overrides: Any) -> argparse.Namespace:
    """FedML's flat args for the smoke problem (cross-silo MPI, HeteroFL, 3 rounds)."""
    args = argparse.Namespace(
        training_type="cross_silo", backend="MPI", scenario="horizontal", federated_optimizer="FedAvg",
        dataset="synthetic", client_num_in_total=CLIENTS, client_num_per_round=CLIENTS, comm_round=3,
        epochs=1, batch_size=8, client_optimizer="sgd", learning_rate=0.1, frequency_of_the_test=1,
        using_gpu=False, enable_wandb=False, enable_tracking=False, using_mlops=False, random_seed=0,
        enable_defense=True, defense_type="heterofl", defense_params={"steps": [1, 2, 3, 4], "lam": -50.0},
        enable_attack=False)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def make_model(seed: int = 0) -> nn.Module:
    """A tiny MLP with BatchNorm (buffers) and the watermark output (CLASSES + 1 logits)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES + 1))


def make_dataset(seed: int = 0) -> Tuple[List[Any], Tuple[torch.Tensor, torch.Tensor]]:
    """FedML's 8-item dataset list (DataLoaders over tensors) and HeteroFL's trigger set."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(CLASSES, FEATURES, generator=g)

    def sample(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, CLASSES, (n,), generator=g)
        return centres[y] + torch.randn(n, FEATURES, generator=g), y

    local = {i: sample(20 + 4 * i) for i in range(CLIENTS)}
    test = sample(60)
    trigger = (torch.randn(4, FEATURES, generator=g), torch.full((4,), CLASSES))

    def loader(xy: Tuple[torch.Tensor, torch.Tensor]) -> DataLoader:
        return DataLoader(TensorDataset(*xy), batch_size=8, shuffle=False)

    dataset = [sum(len(v[1]) for v in local.values()), len(test[1]), None, loader(test),
               {i: len(v[1]) for i, v in local.items()}, {i: loader(v) for i, v in local.items()},
               {i: loader(test) for i in local}, CLASSES + 1]
    return dataset, trigger


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--fail", default=None, help="RANK:ROUND:raise|kill")
    cli = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import fedml_heterofl.fedml_bridge as bridge

    args = bridge.init(make_args(), cli.out_dir)
    dataset, trigger = make_dataset(args.random_seed)
    model = make_model(args.random_seed)
    fail_rank, fail_round, how = (cli.fail.split(":") if cli.fail else (-1, -1, ""))

    def maybe_fail(round_idx: int) -> None:
        if args.rank == int(fail_rank) and round_idx == int(fail_round):
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure in rank {args.rank}, round {round_idx}")

    class Trainer(bridge.HeteroFLClientTrainer):
        def train(self, train_data, device, args):
            maybe_fail(args.round_idx)
            return super().train(train_data, device, args)

    class Aggregator(bridge.HeteroFLServerAggregator):
        def aggregate(self, models):
            maybe_fail(self.args.round_idx)
            return super().aggregate(models)

    if args.rank == 0:
        aggregator = Aggregator(model, args, trigger_set=trigger)
        bridge.run_cross_silo(args, torch.device("cpu"), dataset, model, server_aggregator=aggregator,
                              run_dir=cli.out_dir)
        params = bridge.StateCodec.for_model(model).flatten(aggregator.get_model_params())
        with open(os.path.join(cli.out_dir, "result.json"), "w") as fh:
            json.dump({"history": aggregator.history, "params": params.tolist()}, fh)
    else:
        trainer = Trainer(model, args, trigger_set=trigger)
        bridge.run_cross_silo(args, torch.device("cpu"), dataset, model, client_trainer=trainer,
                              run_dir=cli.out_dir)


if __name__ == "__main__":
    sys.exit(main())
