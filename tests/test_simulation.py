"""The standalone simulator on real MNIST (a few clients, few rounds): end to end, determinism, resume
after a kill, the grid and report commands, CLI errors (the MPI backend: tests/test_mpi_backend.py)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fedml_heterofl.cli import main as cli_main
from fedml_heterofl.experiments.archive import ARCHIVED_FILES
from fedml_heterofl.experiments.grid import load_grid, parse_set
from fedml_heterofl.experiments.publish import write_report
from fedml_heterofl.settings import SettingsError, settings_from_dict
from fedml_heterofl.simulation.runner import Simulation
from helpers import ROOT, mnist_lr_config, read_metrics



def tiny(tmp_path, **sections):
    """3 MNIST/LR clients, one of them flipping signs, 3 rounds; results under ``tmp_path/results``."""
    train = {"client_num_in_total": 3, "client_num_per_round": 3, "comm_round": 3, "batch_size": 64}
    return mnist_lr_config(tmp_path / "results", "sign_flip", 1, {"train_args": train}, sections)


def test_standalone_end_to_end_and_deterministic(tmp_path):
    cfg = tiny(tmp_path)
    s = settings_from_dict(cfg)
    a = Simulation(s, results_dir=str(tmp_path / "a")).run(progress=False)
    b = Simulation(s, results_dir=str(tmp_path / "b")).run(progress=False)
    assert a["finished"] and a["rounds"] == 3 and a["malicious"] == b["malicious"] and len(a["malicious"]) == 1
    run = next((tmp_path / "a").iterdir())
    ra, rb = read_metrics(run), read_metrics(next((tmp_path / "b").iterdir()))
    assert [r["test_acc"] for r in ra] == [r["test_acc"] for r in rb]
    assert 0.3 < float(ra[-1]["test_acc"]) <= 1.0  # LR on 3 MNIST clients learns in 3 rounds
    # ignoring the watermark output can only turn wrong answers into right ones (labels are < L)
    assert all(float(r["test_acc_task"]) >= float(r["test_acc"]) for r in ra)
    assert a["final_acc_task"] == pytest.approx(float(ra[-1]["test_acc_task"]))
    for key in ("removed", "removal_success_rate", "fpr", "removed_sybil_direction_removal", "time_train"):
        assert key in ra[0]
    assert (run / "config.yaml").exists() and (run / "checkpoint.pt").exists() and (run / "summary.json").exists()
    part = json.loads((run / "partition.json").read_text())
    assert len(part["load"]) == 3 and sum(part["load"]) == pytest.approx(3.0) and 0 <= a["mean_label_entropy"] <= 1


def test_the_step_4_aware_attack_on_its_own_samples_runs_end_to_end(tmp_path):
    # adaptive_deviation with harm: loss evaluates its candidates on the attackers' own rows, which the
    # standalone run hands it: the attacker's partition, clean; the server's aggregate is the predicted one
    cfg = tiny(tmp_path, attack_args={"attack_type": "adaptive_deviation",
                                      "attack_params": {"harm": "loss", "loss_samples": 64, "refine": 1}},
               train_args={"client_num_in_total": 4, "client_num_per_round": 4, "comm_round": 2, "batch_size": 64})
    sim = Simulation(settings_from_dict(cfg), results_dir=str(tmp_path / "r"))
    (attacker,) = sim.work.malicious
    rows = sim.work.parts[attacker]
    x, y = sim.server.attack.own_data
    assert torch.equal(x, sim.work.dataset.train_x[rows]) and torch.equal(y, sim.work.dataset.train_y[rows])
    summary = sim.run(progress=False)
    metrics = read_metrics(next((tmp_path / "r").iterdir()))
    assert summary["finished"] and len(metrics) == 2
    assert all(r["deviation_agrees"] == "1.0" and r["oracle_agrees"] == "1.0" for r in metrics)
    assert all(float(r["attack_harm"]) > 0 for r in metrics)  # a mean cross-entropy


def test_max_samples_per_client_caps_every_partition(tmp_path):
    from fedml_heterofl.simulation.workload import build_workload

    cfg = tiny(tmp_path)
    full = build_workload(settings_from_dict(cfg))
    cfg["data_args"]["max_samples_per_client"] = 50
    capped = build_workload(settings_from_dict(cfg))
    assert all(len(p) > 50 for p in full.parts)  # 60,000 MNIST images over 3 clients
    for p, c, ci in zip(full.parts, capped.parts, capped.client_index):
        assert len(c) == 50 and bool(torch.isin(c, p).all())
        assert len(ci) == 50 + cfg["data_args"]["trigger_size"]  # HeteroFL: + the trigger rows


@pytest.mark.parametrize("model", ["cnn", "rnn"])
def test_parallel_client_rounds_do_not_depend_on_the_thread_count(tmp_path, model):
    # the CNN (dropout) and the RNN train one client per core (local_sgd_parallel): a round's updates are the
    # same bit for bit on 1 or 3 threads, and each row is the client's own local_sgd (what FedML's MPI
    # clients run) at one intra-op thread
    from fedml_heterofl.simulation.local_training import client_seed, local_sgd

    sections = {"model_args": {"model": model}, "train_args": {"batch_size": 8}}
    if model == "rnn":
        sections.update(data_args={"dataset": "shakespeare", "partition_method": "natural", "max_clients": 3,
                                   "max_samples_per_client": 12})
    else:
        sections["data_args"] = {"max_samples_per_client": 20}
    sim = Simulation(settings_from_dict(tiny(tmp_path, **sections)), results_dir=str(tmp_path / "r"))
    assert not sim.vectorise
    clients, w = torch.tensor([0, 2, 1]), sim.work.init_params
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sim.train(1, clients, w)
        alone = local_sgd(sim.model, sim.work.layout, w, sim.x[sim.work.client_index[2]],
                          sim.y[sim.work.client_index[2]], seed=client_seed(0, 1, 2), **sim.sgd)
        torch.set_num_threads(3)
        three = sim.train(1, clients, w)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three) and torch.equal(one[1], alone)
    assert one.abs().max() > 1e-4 and not torch.equal(one[0], one[2])
    # client_threads: 1, one client after another on all intra-op threads (the benchmark's loop): the same
    # updates up to the float rounding of the thread count
    looped = Simulation(settings_from_dict(tiny(tmp_path, train_args={"batch_size": 8, "client_threads": 1},
                                                **{k: v for k, v in sections.items() if k != "train_args"})),
                        results_dir=str(tmp_path / "l"))
    assert looped.client_threads == 1
    assert torch.allclose(looped.train(1, clients, w), one, atol=1e-5)


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    cfg = tiny(tmp_path, train_args={"comm_round": 4})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, FEDML_HETEROFL_QUIET="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "fedml_heterofl", "--cf", str(path), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "results"
    deadline = time.time() + 600  # a loaded machine may take minutes to import and train a round
    while time.time() < deadline and proc.poll() is None:  # kill it once at least one round is saved
        runs = list(results.glob("*/metrics.csv"))
        if runs and len(read_metrics(runs[0].parent)) >= 1:
            break
        time.sleep(0.05)
    assert results.is_dir(), "the run saved no round within the deadline"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = next(results.iterdir())
    done_before = len(read_metrics(run))
    assert 1 <= done_before <= 4
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    resumed = read_metrics(run)
    assert [int(r["round"]) for r in resumed] == [0, 1, 2, 3]  # no round lost or repeated
    fresh = Simulation(settings_from_dict(cfg), results_dir=str(tmp_path / "fresh")).run(progress=False)
    uninterrupted = read_metrics(next((tmp_path / "fresh").iterdir()))
    assert [r["test_acc"] for r in resumed] == [r["test_acc"] for r in uninterrupted]
    assert fresh["finished"]


def test_grid_and_report_smoke(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny(tmp_path, train_args={"comm_round": 2})))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": "base.yaml", "results_dir": str(tmp_path / "grid"), "archive_dir": str(tmp_path / "runs"),
        "axes": {"defense": {"fedavg": {"defense_args.enable_defense": False},
                             "heterofl": {"defense_args.enable_defense": True}},
                 "attack": {"sign_flip": {}}}}, sort_keys=False))
    assert cli_main(["grid", "--cf", str(grid), "--no-progress"]) == 0
    folders = sorted(p.name for p in (tmp_path / "grid").iterdir())
    assert folders == ["defense=fedavg,attack=sign_flip", "defense=heterofl,attack=sign_flip"]
    # each finished cell's small files were archived, nothing else (no checkpoint, no log)
    for folder in folders:
        archived = sorted(p.name for p in (tmp_path / "runs" / folder).iterdir())
        assert archived == sorted(ARCHIVED_FILES)
        assert (tmp_path / "runs" / folder / "metrics.csv").read_text() == \
            (tmp_path / "grid" / folder / "metrics.csv").read_text()
    mtime = (tmp_path / "grid" / folders[0] / "summary.json").stat().st_mtime
    # a committed archive edited after the run (e.g. a field backfilled) is not overwritten by the
    # results folder's older copy of the same run
    archived_summary = tmp_path / "runs" / folders[0] / "summary.json"
    archived_summary.write_text(json.dumps({**json.loads(archived_summary.read_text()), "backfilled": 1.0}))
    assert cli_main(["grid", "--cf", str(grid), "--no-progress"]) == 0  # finished cells are skipped
    assert (tmp_path / "grid" / folders[0] / "summary.json").stat().st_mtime == mtime
    assert json.loads(archived_summary.read_text())["backfilled"] == 1.0
    # Two cells at a time, each in its own process: the same numbers as one after the other. (Its
    # archive is in a folder of its own: beside tmp_path/runs, the finished cells would be copied.)
    spec = yaml.safe_load(grid.read_text())
    spec["results_dir"], spec["archive_dir"] = str(tmp_path / "grid_jobs"), str(tmp_path / "jobs" / "runs")
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert cli_main(["grid", "--cf", str(grid), "--no-progress", "--jobs", "2"]) == 0
    for folder in folders:
        assert (tmp_path / "grid_jobs" / folder / "checkpoint.pt").exists()  # it ran
        pair = [read_metrics(tmp_path / root / folder) for root in ("grid", "grid_jobs")]
        assert [[(r["test_acc"], r["removed"]) for r in rows] for rows in pair] == \
            [[(r["test_acc"], r["removed"]) for r in pair[0]]] * 2
    out, table = write_report(tmp_path / "grid")
    assert "| fedavg |" in table and "| heterofl |" in table and "sign_flip" in table
    assert (out / "table_accuracy.csv").exists() and list(out.glob("accuracy_*.png"))
    # the archive alone regenerates the same tables
    archived_out, _ = write_report(tmp_path / "runs")
    for csv_file in out.glob("table_*.csv"):
        assert (archived_out / csv_file.name).read_text() == csv_file.read_text()
    # the archive command copies finished runs (here again, into a new folder)
    assert cli_main(["archive", str(tmp_path / "grid"), str(tmp_path / "runs2")]) == 0
    assert sorted(p.name for p in (tmp_path / "runs2").iterdir()) == folders
    # A fresh clone: the results folder is gone, the archive is committed. Archived cells with the same
    # settings are not run again; a cell whose settings changed (another seed) runs again.
    spec["results_dir"] = str(tmp_path / "fresh_clone")
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert cli_main(["grid", "--cf", str(grid), "--no-progress"]) == 0
    assert not (tmp_path / "fresh_clone").exists()
    spec["axes"]["defense"]["fedavg"]["common_args.random_seed"] = 7
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert cli_main(["grid", "--cf", str(grid), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "fresh_clone").iterdir()) == [folders[0]]


def test_grid_copies_cells_another_archive_already_ran(tmp_path):
    # A sweep whose "3" cell has the settings of a Table I cell archived beside it (as the trigger-share
    # grid's 200-samples cells are Table I's): that cell is copied under the sweep's name, not run; the
    # sweep's other cell and a cell whose settings differ only in the seed run.
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny(tmp_path, train_args={"comm_round": 1})))
    table = tmp_path / "table.yaml"
    table.write_text(yaml.safe_dump({"base": "base.yaml", "results_dir": str(tmp_path / "results" / "table"),
                                     "archive_dir": str(tmp_path / "runs" / "table"), "axes": {"seed": [0]}}))
    assert cli_main(["grid", "--cf", str(table), "--no-progress"]) == 0
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": "base.yaml", "results_dir": str(tmp_path / "results" / "sweep"),
        "archive_dir": str(tmp_path / "runs" / "sweep"),
        "axes": {"clients": {"4": {"train_args.client_num_in_total": 4, "train_args.client_num_per_round": 4},
                             "3": {}},
                 "seed": [0, 1]}}, sort_keys=False))
    assert cli_main(["grid", "--cf", str(sweep), "--no-progress"]) == 0
    ran = {p.parent.name for p in (tmp_path / "results" / "sweep").glob("*/checkpoint.pt")}
    assert ran == {"clients=4,seed=0", "clients=4,seed=1", "clients=3,seed=1"}
    copied = "clients=3,seed=0"
    for root in ("results", "runs"):
        assert sorted(p.name for p in (tmp_path / root / "sweep" / copied).iterdir()) == sorted(ARCHIVED_FILES)
        assert (tmp_path / root / "sweep" / copied / "metrics.csv").read_text() == \
            (tmp_path / "runs" / "table" / "seed=0" / "metrics.csv").read_text()
    assert len(list((tmp_path / "runs" / "sweep").iterdir())) == 4


def test_a_failing_cell_does_not_stop_the_grid(tmp_path, capsys):
    # The first cell's data folder is empty: it fails when it runs (settings are valid), the second
    # cell still runs, and the grid then exits 1 naming the failed cell and its error.
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny(tmp_path, train_args={"comm_round": 1})))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": "base.yaml", "results_dir": str(tmp_path / "grid"),
        "axes": {"data": {"missing": {"data_args.data_cache_dir": str(tmp_path / "empty")}, "cached": {}}}},
        sort_keys=False))
    assert cli_main(["grid", "--cf", str(grid), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 cells failed" in err and "data=missing: " in err and "fedml-heterofl data fetch mnist" in err
    assert json.loads((tmp_path / "grid" / "data=cached" / "summary.json").read_text())["finished"]
    assert not (tmp_path / "grid" / "data=missing" / "summary.json").exists()


GRIDS = sorted((ROOT / "config" / "grids").glob("*.yaml"))


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.stem)
def test_every_shipped_grid_validates(grid):
    results, cells = load_grid(str(grid), parse_set(["device_args.using_gpu=true"]))
    assert len(cells) >= 2 and len({name for name, _ in cells}) == len(cells)  # one folder per cell
    assert all(s.device_args.using_gpu for _, s in cells)
    if results != Path("results") / grid.stem:
        # a companion grid (an ablation, more seeds, the rules a sweep cannot take to its end) writes into
        # another shipped grid's folder, beside (never over) that grid's cells
        owners = [other for other in GRIDS if other != grid and results == Path("results") / other.stem
                  and load_grid(str(other))[0] == results]
        assert len(owners) == 1, f"{grid.stem} writes into {results}, which no shipped grid owns"
        _, owner_cells = load_grid(str(owners[0]))
        assert not {name for name, _ in cells} & {name for name, _ in owner_cells}


def test_grid_overrides_reach_into_mappings():
    # two axes that each set one parameter of the same attack: both survive (a mapping would replace)
    results, cells = load_grid(str(ROOT / "config" / "grids" / "gamma_init_mnist_lr.yaml"))
    params = {name: s.attack_args.attack_params for name, s in cells}
    assert params["seed=1,perturbation=sign,gamma_init=0.03"] == {"perturbation": "sign", "gamma_init": 0.03}
    assert params["seed=0,perturbation=std,gamma_init=10"] == {}
    with pytest.raises(SettingsError, match="is not a mapping"):
        load_grid(str(ROOT / "config" / "grids" / "gamma_init_mnist_lr.yaml"),
                  {"attack_args.attack_type.x": 1})


def test_grid_set_option_is_checked():
    with pytest.raises(SettingsError, match="expected section.key=VALUE"):
        parse_set(["using_gpu"])
    assert parse_set(["train_args.comm_round=3", "data_args.dataset=mnist"]) == {
        "train_args.comm_round": 3, "data_args.dataset": "mnist"}


def test_cli_reports_bad_configs(tmp_path, capsys):
    cfg = tiny(tmp_path, defense_args={"defense_type": "krum9"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["run", "--cf", str(path)]) == 2
    assert "defense_type: 'krum9' is not allowed; allowed:" in capsys.readouterr().err
    cfg = tiny(tmp_path, data_args={"data_cache_dir": str(tmp_path / "empty")})
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["run", "--cf", str(path)]) == 2
    assert "fedml-heterofl data fetch mnist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "grid", "report", "data", "defenses", "attacks"])
def test_every_subcommand_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fedml-heterofl {command}")


def test_compare_rows_skips_timing_and_untested_cells():
    from fedml_heterofl.experiments.recheck import compare_rows

    committed = [{"round": "0", "removed": "1", "time_train": "0.5", "test_acc": ""},
                 {"round": "1", "removed": "2", "time_train": "0.7", "test_acc": "0.75"}]
    same = [{"round": "0", "removed": "1", "time_train": "9.0", "test_acc": "0.5"},
            {"round": "1", "removed": "2", "time_train": "9.0", "test_acc": "0.75"}]
    result = compare_rows(Path("r"), committed, same)
    # round, removed in both rows, test_acc in round 1 only: 5 cells; timing and round 0's test are skipped
    assert result.compared == 5 and result.differences == [] and result.rounds == 2 and result.run == Path("r")
    other = [dict(same[0]), {**same[1], "test_acc": "0.7500001"}]
    assert compare_rows(Path("r"), committed, other).differences == [(1, "test_acc", "0.75", "0.7500001")]


def test_recheck_reruns_an_archived_run_and_finds_a_changed_number(tmp_path, capsys):
    cfg = tiny(tmp_path)
    cfg["train_args"]["comm_round"] = 4
    s = settings_from_dict(cfg)
    Simulation(s, results_dir=str(tmp_path / "results")).run(progress=False)
    run = next((tmp_path / "results").iterdir())
    assert cli_main(["recheck", str(run), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "rounds 0-1" in out and out.rstrip().endswith("equal")
    rows = read_metrics(run)
    rows[1]["test_acc"] = "0.123456"
    with open(run / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli_main(["recheck", str(run), "--rounds", "2"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT in 1 cells" in out and "round 1 test_acc: committed 0.123456" in out
