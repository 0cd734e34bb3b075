"""``fedml-heterofl report`` on hand-made result folders (no training): labels, tables, time to
accuracy and sweep plots, with every expected number worked out by hand in the comments."""
import copy
import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

from fedml_heterofl.cli import main as cli_main
from fedml_heterofl.experiments import figures
from fedml_heterofl.experiments.figures import sweep_points
from fedml_heterofl.experiments.publish import write_report
from fedml_heterofl.experiments.runs import defense_label, load_runs, rows_of, steps_label, swept
from fedml_heterofl.experiments.summary import SUMMARY_HEADER
from fedml_heterofl.experiments.tables import ablation_name, accuracy_table, drops_table, oracle_table
from fedml_heterofl.experiments.timing import time_table
from fedml_heterofl.settings import settings_from_dict

ROOT = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load(open(ROOT / "config" / "mnist_lr.yaml"))
STEPS = ("sybil_direction_removal", "similarity_detection", "watermark_verification", "magnitude_rectification")


def config(**overrides: Any) -> Dict[str, Any]:
    """``config/mnist_lr.yaml`` with ``{"section__key": value}`` overrides, through ``Settings.to_dict()``
    (what a run folder's config.yaml holds)."""
    cfg = copy.deepcopy(BASE)
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    return settings_from_dict(cfg).to_dict()


def fedavg(**overrides: Any) -> Dict[str, Any]:
    return config(defense_args__enable_defense=False, **overrides)


def heterofl(steps=(1, 2, 3, 4), lam=-5.0, **overrides: Any) -> Dict[str, Any]:
    return config(defense_args__defense_params={"steps": list(steps), "beta": 0.2, "lam": lam}, **overrides)


def no_attack(cfg: Dict[str, Any]) -> Dict[str, Any]:
    cfg["attack_args"]["enable_attack"] = False
    return cfg


def acc_rows(final: float, best: float) -> List[Dict[str, Any]]:
    """Two evaluated rounds: best accuracy first, final last."""
    return [{"round": 0, "test_acc": best, "time_train": 1.0, "time_server": 0.0},
            {"round": 1, "test_acc": final, "time_train": 1.0, "time_server": 0.0}]


def write_run(root: Path, name: str, cfg: Dict[str, Any], rows: List[Dict[str, Any]], *,
              finished: bool = True) -> Path:
    """A run folder as the simulator leaves it: config.yaml, metrics.csv, summary.json."""
    settings = settings_from_dict(cfg)
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    keys: List[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(folder / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
    accs = [r["test_acc"] for r in rows if r.get("test_acc") not in (None, "")]

    def mean(key: str) -> Optional[float]:
        vals = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
        return sum(vals) / len(vals) if vals else None

    summary = {"finished": finished, "rounds": len(rows), "defense": settings.defense_name,
               "attack": settings.attack_name or "none", "dataset": "mnist", "model": "lr",
               "seed": settings.common_args.random_seed, "malicious": list(range(settings.f)),
               "final_acc": accs[-1], "best_acc": max(accs), "mean_removal_success_rate": mean("removal_success_rate"),
               "mean_fpr": mean("fpr")}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def find(rows: List[Dict[str, str]], **match: str) -> Dict[str, str]:
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, rows)
    return hits[0]


def removal_row(round_idx: int, f: int, by_step: Dict[str, tuple], n: int = 100, **extra: Any) -> Dict[str, Any]:
    """A HeteroFL metrics row: ``by_step`` = step -> (removed, removed attackers)."""
    removed = sum(t for t, _ in by_step.values())
    mal = sum(m for _, m in by_step.values())
    row: Dict[str, Any] = {"round": round_idx, "removed": removed, "removed_malicious": mal,
                           "removed_benign": removed - mal, "removal_success_rate": mal / f if f else math.nan,
                           "fpr": (removed - mal) / (n - f)}
    for step, (total, m) in by_step.items():
        row[f"removed_{step}"], row[f"removed_malicious_{step}"] = total, m
    row.update({"time_train": 1.0, "time_server": 0.0})
    row.update(extra)
    return row


# -- labels -------------------------------------------------------------------------------------------
def test_defense_labels_from_config():
    assert steps_label([1]) == "1" and steps_label([2, 1]) == "1-2" and steps_label([1, 2, 4]) == "1-2,4"
    assert defense_label("heterofl", heterofl()) == "heterofl"
    assert defense_label("heterofl", heterofl(steps=[1])) == "heterofl[1]"
    assert defense_label("heterofl", heterofl(steps=[1, 2])) == "heterofl[1-2]"
    assert defense_label("heterofl", heterofl(steps=[1, 2, 3])) == "heterofl[1-3]"
    assert defense_label("fedavg", fedavg()) == "fedavg"
    assert defense_label("multikrum", config(defense_args__defense_type="multikrum",
                                              defense_args__defense_params={})) == "multikrum"
    # a config without steps runs HeteroFL's default: all four
    assert defense_label("heterofl", {"defense_args": {"enable_defense": True, "defense_params": {}}}) == "heterofl"
    assert [ablation_name(x) for x in ("fedavg", "heterofl[1]", "heterofl[1-2]", "heterofl")] == [
        "FedAvg", "step 1", "steps 1-2", "steps 1-4 (HeteroFL)"]


# -- Table I -----------------------------------------------------------------------------------------
def test_accuracy_mean_std_over_seeds_best_accuracy_and_unfinished_runs(tmp_path):
    root = tmp_path / "res"
    write_run(root, "defense=fedavg,attack=none,seed=0", no_attack(fedavg(common_args__random_seed=0)),
              acc_rows(final=0.80, best=0.82))
    write_run(root, "defense=fedavg,attack=none,seed=1", no_attack(fedavg(common_args__random_seed=1)),
              acc_rows(final=0.90, best=0.94))
    # an unfinished third seed (a grid still running) is left out of every number
    write_run(root, "defense=fedavg,attack=none,seed=2", no_attack(fedavg(common_args__random_seed=2)),
              acc_rows(final=0.10, best=0.10), finished=False)
    (root / "defense=fedavg,attack=min_max,seed=0").mkdir()  # just started: no summary yet
    out, table = write_report(root)
    # final: mean (0.80 + 0.90) / 2 = 0.85, sample std sqrt(((0.05)^2 * 2) / 1) = 0.0707
    # best: mean (0.82 + 0.94) / 2 = 0.88, sample std 0.06 * sqrt(2) = 0.0849
    assert "| fedavg | 0.8500 ± 0.0707 |" in table
    assert "| fedavg | 0.8800 ± 0.0849 |" in table
    row = find(read_csv(out / "table_accuracy.csv"), defense="fedavg", attack="none")
    assert row["seeds"] == "2"
    assert float(row["final_acc_mean"]) == pytest.approx(0.85)
    assert float(row["final_acc_std"]) == pytest.approx(0.070711, abs=1e-6)
    assert float(row["best_acc_mean"]) == pytest.approx(0.88)
    assert float(row["best_acc_std"]) == pytest.approx(0.084853, abs=1e-6)
    # no HeteroFL run: neither the ablation nor the per-step table
    assert not (out / "table_ablation.md").exists() and not (out / "table_steps.md").exists()
    assert not list(out.glob("removal_*.png")) and not list(out.glob("accuracy_vs_*.png"))



def seeds_results(root: Path) -> None:
    """FedAvg without attack at seeds 0, 1, 2 (0.80, 0.90, 0.70) and under Min-Max at seed 0 only (0.50):
    a grid whose later seeds are still running."""
    for seed, acc in ((0, 0.80), (1, 0.90), (2, 0.70)):
        write_run(root, f"none{seed}", no_attack(fedavg(common_args__random_seed=seed)), acc_rows(final=acc, best=acc))
    write_run(root, "minmax0", fedavg(), acc_rows(final=0.50, best=0.50))


def test_a_cell_with_fewer_seeds_than_the_others_says_how_many(tmp_path):
    root = tmp_path / "res"
    seeds_results(root)
    md, _ = accuracy_table(load_runs(root))
    # none: (0.8 + 0.9 + 0.7) / 3 = 0.80, std 0.1; Min-Max has one seed of the three
    assert "| fedavg | 0.8000 ± 0.1000 | 0.5000 (n=1) |" in md
    assert "(n=k): a cell of k seeds, where others have 3" in md
    md, _ = accuracy_table(load_runs(root, {0}))  # one seed everywhere: nothing to mark
    assert "| fedavg | 0.8000 | 0.5000 |" in md and "(n=" not in md


def test_report_and_summary_read_the_seeds_asked_for(tmp_path, capsys):
    root = tmp_path / "res"
    seeds_results(root)
    assert cli_main(["report", str(root), "--seeds", "1-2", "--print", "table_accuracy"]) == 0
    # seeds 1 and 2: (0.9 + 0.7) / 2 = 0.80, std 0.1414; no Min-Max run of those seeds: no column
    assert "| fedavg | 0.8000 ± 0.1414 |" in capsys.readouterr().out
    assert cli_main(["report", str(root), "--seeds", "0"]) == 0
    assert "| fedavg | 0.8000 | 0.5000 |" in capsys.readouterr().out
    assert "Seeds read: 0 (--seeds)." in (root / "report" / "README.md").read_text()
    # no run of the seeds asked for: refused, naming the seeds the folder has; a malformed selection too
    assert cli_main(["report", str(root), "--seeds", "5,7", "--print", "table_accuracy"]) == 2
    assert "no finished runs of seeds 5, 7" in (err := capsys.readouterr().err) and "have seeds 0, 1, 2" in err
    for bad in ("x", "2-1", "-1", "1,,2"):
        assert cli_main(["report", str(root), "--seeds", bad]) == 2
        assert "expected seed numbers as 0, 0,2 or 0-2" in capsys.readouterr().err
    # summary: FedAvg clean over seeds 0-2 for one row, seed 1 only for the other; seeds column 3 and 1
    assert cli_main(["summary", f"all={root}", f"one={root}", "--seeds", "one=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| all | 100 / 20 |") and "| 3 | 0.8000 |" in out[2]
    assert out[3].startswith("| one | 100 / 20 |") and "| 1 | 0.9000 |" in out[3]
    assert cli_main(["summary", f"all={root}", "--seeds", "other=1"]) == 2
    assert "no row has that label; the rows are 'all'" in capsys.readouterr().err
    assert cli_main(["summary", f"all={root}", "--seeds", "all"]) == 2
    assert "expected LABEL=SEEDS" in capsys.readouterr().err

def test_drops_beside_the_papers_table_one(tmp_path):
    root = tmp_path / "res"
    mkrum = dict(defense_args__defense_type="multikrum", defense_args__defense_params={})
    write_run(root, "fedavg-none", no_attack(fedavg()), acc_rows(final=0.80, best=0.80))
    write_run(root, "fedavg-minmax", fedavg(), acc_rows(final=0.50, best=0.80))
    for seed, final in ((0, 0.70), (1, 0.74)):  # clean mean 0.72
        write_run(root, f"mkrum-none-{seed}", no_attack(config(common_args__random_seed=seed, **mkrum)),
                  acc_rows(final=final, best=final))
    write_run(root, "mkrum-minmax", config(**mkrum), acc_rows(final=0.60, best=0.70))
    # a HeteroFL ablation variant is not a rule of Table I: no row
    write_run(root, "steps12-none", no_attack(heterofl(steps=[1, 2])), acc_rows(final=0.81, best=0.81))
    write_run(root, "steps12-minmax", heterofl(steps=[1, 2]), acc_rows(final=0.41, best=0.81))
    out, _ = write_report(root)
    md = (out / "table_drops.md").read_text()
    # FedAvg is not in the paper: 0.50 - 0.80 = -30.0 points.  Multi-Krum: its clean column is the mean
    # over both seeds, 0.72, but Min-Max ran at seed 0 only, so its drop is from seed 0's clean accuracy:
    # 0.60 - 0.70 = -10.0 points; the paper's MNIST (LR) row: 0.4501 - 0.8201 = -37.0 points, clean 0.820
    assert "| fedavg | – / 0.800 | – / -30.0 |" in md
    assert "| multikrum | 0.820 / 0.720 | -37.0 / -10.0 |" in md
    assert "heterofl[1-2]" not in md and "MNIST (LR) row" in md
    row = find(read_csv(out / "table_drops.csv"), defense="multikrum", attack="min_max")
    assert float(row["paper_clean"]) == 0.8201 and float(row["paper_acc"]) == 0.4501
    assert float(row["clean_mean"]) == pytest.approx(0.70) and float(row["acc_mean"]) == 0.60
    assert "table_drops.csv" in (out / "README.md").read_text()
    # a workload the paper has no row for gets no drops table
    for summary_path in root.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary_path.write_text(json.dumps({**summary, "dataset": "svhn"}))
    assert drops_table(load_runs(root)) is None



def test_drops_inside_the_seed_spread_are_marked(tmp_path):
    root = tmp_path / "res"
    mkrum = dict(defense_args__defense_type="multikrum", defense_args__defense_params={})
    # clean 0.70 / 0.74: mean 0.72, std 0.0283; Min-Max 0.71 / 0.69: mean 0.70, std 0.0141 -> drop -2.0
    # points, 0.02 <= 0.0283: inside the spread; Min-Sum 0.60 / 0.62: mean 0.61 -> -11.0, outside;
    # sign flipping at seed 0 only (0.71): measured from seed 0's clean 0.70, not the mean 0.72 of both
    # seeds -> +1.0, and one seed has no spread to be inside
    for seed, clean, mm, ms in ((0, 0.70, 0.71, 0.60), (1, 0.74, 0.69, 0.62)):
        write_run(root, f"none{seed}", no_attack(config(common_args__random_seed=seed, **mkrum)),
                  acc_rows(final=clean, best=clean))
        for attack, acc in (("min_max", mm), ("min_sum", ms)):
            write_run(root, f"{attack}{seed}", config(common_args__random_seed=seed, attack_args__attack_type=attack,
                                                       **mkrum), acc_rows(final=acc, best=acc))
    write_run(root, "sign_flip0", config(attack_args__attack_type="sign_flip", **mkrum), acc_rows(final=0.71, best=0.71))
    md, table_csv = drops_table(load_runs(root))
    assert "| multikrum | 0.820 / 0.720 | -37.0 / -2.0† | -34.3 / -11.0 | -0.0 / +1.0 |" in md
    assert "† inside the seed spread" in md
    rows = list(csv.DictReader(table_csv.splitlines()))
    assert [(r["attack"], r["inside_seed_spread"]) for r in rows] == [("min_max", "1"), ("min_sum", "0"), ("sign_flip", "0")]
    assert [float(r["clean_mean"]) for r in rows] == pytest.approx([0.72, 0.72, 0.70])

# -- Table III ---------------------------------------------------------------------------------------
def ablation_results(root: Path) -> None:
    """FedAvg, HeteroFL steps [1, 2] and all four steps under Min-Max (f = 20 of 100), one seed each,
    plus Multi-Krum as another defense."""
    s1, s2, s3, s4 = STEPS
    write_run(root, "defense=fedavg,attack=min_max", fedavg(),
              [removal_row(0, 20, {}, test_acc=0.30), removal_row(1, 20, {}, test_acc=0.40)])
    # steps [1, 2], round 0: step 1 removes 1 client (an attacker), step 2 removes 4 (3 attackers, 1
    # benign): 4 of f = 20 attackers, RSR 0.20; round 1: step 1 nothing, step 2 3 attackers, RSR 0.15.
    # ARSR = (0.20 + 0.15) / 2 = 0.175.  Per step, means over the two rounds:
    #   step 1: attackers (1 + 0) / 2 = 0.5, benign 0, share of f (1/20 + 0) / 2 = 0.025
    #   step 2: attackers (3 + 3) / 2 = 3.0, benign (1 + 0) / 2 = 0.5, share (3/20 + 3/20) / 2 = 0.15
    write_run(root, "defense=heterofl12,attack=min_max", heterofl(steps=[1, 2]),
              [removal_row(0, 20, {s1: (1, 1), s2: (4, 3)}, test_acc=0.60),
               removal_row(1, 20, {s1: (0, 0), s2: (3, 3)}, test_acc=0.70)])
    # all steps: every attacker removed in both rounds, by step 2 (12) and step 3 (8); step 4 removes
    # one benign client per round.  ARSR 1.0; step 3: 8 attackers per round, share 0.40; step 4:
    # 0 attackers, 1 benign per round.
    write_run(root, "defense=heterofl,attack=min_max", heterofl(),
              [removal_row(t, 20, {s1: (0, 0), s2: (12, 12), s3: (8, 8), s4: (1, 0)}, test_acc=acc)
               for t, acc in ((0, 0.80), (1, 0.85))])
    write_run(root, "defense=multikrum,attack=min_max",
              config(defense_args__defense_type="multikrum", defense_args__defense_params={}),
              [removal_row(0, 20, {}, test_acc=0.75), removal_row(1, 20, {}, test_acc=0.78)])


def test_ablation_table_and_per_step_removals(tmp_path):
    root = tmp_path / "res"
    ablation_results(root)
    out, _ = write_report(root)
    md = (out / "table_ablation.md").read_text()
    lines = [l for l in md.splitlines() if l.startswith("| ") and "setting" not in l]
    # row order: FedAvg, the HeteroFL variants by their steps, then the other defenses
    assert [l.split(" | ")[0] for l in lines] == ["| FedAvg", "| steps 1-2", "| steps 1-4 (HeteroFL)", "| multikrum"]
    assert "| steps 1-2 | 0.7000 / 0.17 |" in md  # final acc 0.70, ARSR 0.175
    assert "| steps 1-4 (HeteroFL) | 0.8500 / 1.00 |" in md
    assert "| FedAvg | 0.4000 / 0.00 |" in md
    ab = find(read_csv(out / "table_ablation.csv"), defense="heterofl[1-2]", attack="min_max")
    assert float(ab["acc_mean"]) == pytest.approx(0.70) and float(ab["arsr_mean"]) == pytest.approx(0.175)

    steps = read_csv(out / "table_steps.csv")
    s1 = find(steps, defense="heterofl[1-2]", step="1")
    assert float(s1["attackers_removed_per_round"]) == pytest.approx(0.5)
    assert float(s1["benign_removed_per_round"]) == pytest.approx(0.0)
    assert float(s1["attacker_removal_rate"]) == pytest.approx(0.025)
    s2 = find(steps, defense="heterofl[1-2]", step="2")
    assert float(s2["attackers_removed_per_round"]) == pytest.approx(3.0)
    assert float(s2["benign_removed_per_round"]) == pytest.approx(0.5)
    assert float(s2["attacker_removal_rate"]) == pytest.approx(0.15)
    assert not [r for r in steps if r["defense"] == "heterofl[1-2]" and r["step"] in ("3", "4")]
    s3 = find(steps, defense="heterofl", step="3")
    assert float(s3["attackers_removed_per_round"]) == 8.0 and float(s3["attacker_removal_rate"]) == pytest.approx(0.4)
    s4 = find(steps, defense="heterofl", step="4")
    assert float(s4["attackers_removed_per_round"]) == 0.0 and float(s4["benign_removed_per_round"]) == 1.0
    md = (out / "table_steps.md").read_text()
    # steps [1, 2]: step 2 cell "3.00 (15%) / 0.50", steps 3-4 not run; all steps ARSR 0.175 -> 18%,
    # FPR (1/80 + 0) / 2 = 0.625 % -> 1%
    assert "| heterofl[1-2] | min_max | 0.50 (2%) / 0.00 | 3.00 (15%) / 0.50 | – | – | 18% / 1% |" in md
    assert "| heterofl | min_max | 0.00 (0%) / 0.00 | 12.00 (60%) / 0.00 | 8.00 (40%) / 0.00 | 0.00 (0%) / 1.00 |" in md
    # the per-round removal plot of Min-Max, one panel per HeteroFL variant
    assert (out / "removal_mnist_lr_min_max.png").exists()
    curves = figures.removal_curves(load_runs(root))
    rounds, rates = curves[("mnist/lr", "heterofl[1-2]", "min_max")]["similarity_detection"]
    assert rounds == [0, 1] and rates == pytest.approx([0.15, 0.15])
    readme = (out / "README.md").read_text()
    for name in ("table_accuracy", "table_removal", "table_ablation", "table_steps", "table_time"):
        assert f"({name}.csv)" in readme
    assert "| steps 1-2 | 0.7000 / 0.17 |" in readme and "![removal_mnist_lr_min_max](removal_mnist_lr_min_max.png)" in readme


# -- Table II ----------------------------------------------------------------------------------------
def test_time_to_accuracy(tmp_path):
    root = tmp_path / "res"
    for seed, final in ((0, 0.80), (1, 0.90)):
        write_run(root, f"defense=fedavg,attack=none,seed={seed}", no_attack(fedavg(common_args__random_seed=seed)),
                  acc_rows(final=final, best=final))
    # target = 0.95 * (0.80 + 0.90) / 2 = 0.8075.  Rounds 0-3 with accuracy on rounds 1 and 3 only;
    # time_attack / time_defend are inside time_server and must not be added again.
    timed = [{"round": 0, "time_train": 1.0, "time_server": 0.5, "time_attack": 100.0, "time_defend": 100.0},
             {"round": 1, "time_train": 1.0, "time_server": 0.25, "test_acc": 0.70},
             {"round": 2, "time_train": 2.0, "time_server": 0.5},
             {"round": 3, "time_train": 1.0, "time_server": 0.25, "test_acc": 0.81, "time_eval": 9.0}]
    write_run(root, "defense=heterofl,attack=none,seed=0", no_attack(heterofl()), timed)
    # reached at round index 3 = after 4 rounds; seconds 1.5 + 1.25 + 2.5 + 1.25 = 6.5; 6.5 / 4 = 1.625 s/round
    never = [dict(r, test_acc=0.5) if "test_acc" in r else r for r in timed]
    write_run(root, "defense=multikrum,attack=none,seed=0",
              no_attack(config(defense_args__defense_type="multikrum", defense_args__defense_params={})), never)
    out, _ = write_report(root)  # default: 95 % of FedAvg without attack
    rows = [r for r in read_csv(out / "table_time.csv") if r["target_source"].startswith("95%")]
    het = find(rows, defense="heterofl", attack="none")
    assert float(het["target"]) == pytest.approx(0.8075)
    assert het["seeds_reached"] == "1"
    assert float(het["rounds_to_target_mean"]) == 4.0
    assert float(het["seconds_to_target_mean"]) == pytest.approx(6.5)
    assert float(het["seconds_per_round_mean"]) == pytest.approx(1.625)
    mk = find(rows, defense="multikrum", attack="none")
    assert mk["seeds_reached"] == "0" and mk["rounds_to_target_mean"] == "nan"
    md = (out / "table_time.md").read_text()
    assert "target 0.8075" in md
    # FedAvg seed 0 (0.80 < 0.8075) never reaches it, seed 1 does after round 1 (2 s): 1 of 2 seeds, 1 s;
    # HeteroFL's 6.5 s are 6.50x FedAvg's
    assert "| heterofl | none | 1/1 | 4.0 | 6.50 | 6.50× | 1.625 |" in md
    assert "| multikrum | none | never | – | – | – | 1.625 |" in md
    assert "| fedavg | none | 1/2 | 1.0 | 1.00 | 1.00× | 1.000 |" in md
    # The paper's Table II target for MNIST (LR), 0.80: both FedAvg seeds reach it after round 1 (seed 0 ends
    # at exactly 0.80); HeteroFL after 4 rounds. Beside the rows without attack, the paper's hours and their
    # multiple of FedAvg's: HeteroFL 0.1869 h / 0.0883 h = 2.12x, Multi-Krum 0.2422 / 0.0883 = 2.74x.
    assert "target 0.8000 (the paper's Table II target for MNIST (LR))" in md
    assert "| fedavg | none | 2/2 | 1.0 | 1.00 | 1.00× | 1.000 | 0.0883 h (1.00×) |" in md
    assert "| heterofl | none | 1/1 | 4.0 | 6.50 | 6.50× | 1.625 | 0.1869 h (2.12×) |" in md
    assert "| multikrum | none | never | – | – | – | 1.625 | 0.2422 h (2.74×) |" in md

    # --target wins over the FedAvg baseline: 0.75 -> HeteroFL reaches it after 4 rounds (0.70 < 0.75)
    md, _ = time_table(load_runs(root), target=0.75)
    assert "target 0.7500 (--target)" in md and "| fedavg | none | 2/2 | 1.0 | 1.00 | 1.00× | 1.000 |" in md
    # without a FedAvg run without attack only --target sets it (and the paper's), no multiple of FedAvg
    runs = [r for r in load_runs(root) if r.defense != "fedavg"]
    md, table_csv = time_table(runs, target=0.75)
    assert "target 0.7500 (--target)" in md and "| heterofl | none | 1/1 | 4.0 | 6.50 | – | 1.625 |" in md
    md, _ = time_table(runs, target=0.6)
    assert "| heterofl | none | 1/1 | 2.0 | 2.75 | – | 1.625 |" in md
    md, _ = time_table(runs)
    assert "| heterofl | none | no target | – | – | – | 1.625 |" in md


def test_time_table_without_a_paper_column(tmp_path):
    # A workload the paper's Table II lacks gets only the share-of-FedAvg target, and no paper column.
    root = tmp_path / "res"
    write_run(root, "defense=fedavg,attack=none", no_attack(fedavg()), acc_rows(final=0.8, best=0.8))
    runs = load_runs(root)
    for run in runs:
        run.workload = "moons/mlp"
    md, _ = time_table(runs)
    assert "Table II target" not in md and "paper: hours" not in md and md.count("time to accuracy") == 1


def test_cli_report_with_target(tmp_path, capsys):
    root = tmp_path / "res"
    write_run(root, "defense=heterofl,attack=none", no_attack(heterofl()), acc_rows(final=0.6, best=0.7))
    assert cli_main(["report", str(root), "--target", "0.65"]) == 0
    printed = capsys.readouterr().out
    assert "| heterofl | 0.6000 |" in printed and "| heterofl | 0.7000 |" in printed
    md = (root / "report" / "table_time.md").read_text()
    assert "target 0.6500 (--target)" in md and "| heterofl | none | 1/1 | 1.0 | 1.00 | – | 1.000 |" in md
    assert cli_main(["report", str(tmp_path / "empty")]) == 2


# -- sweeps ------------------------------------------------------------------------------------------
def test_lambda_sweep(tmp_path):
    root = tmp_path / "res"
    s3 = STEPS[2]
    # λ = -5: two seeds, final 0.80 / 0.90, ARSR 0.5 / 1.0 -> point (-5, 0.85, 0.75);
    # λ = -2: one seed, final 0.60, ARSR 0.25 -> point (-2, 0.60, 0.25)
    for seed, lam, acc, mal in ((0, -5.0, 0.80, 10), (1, -5.0, 0.90, 20), (0, -2.0, 0.60, 5)):
        write_run(root, f"lam={lam},seed={seed}", heterofl(lam=lam, common_args__random_seed=seed),
                  [removal_row(0, 20, {s3: (mal, mal)}, test_acc=acc)])
    # FedAvg keeps the base config's λ but has no λ: no sweep line, no λ in its label
    write_run(root, "fedavg", fedavg(), [removal_row(0, 20, {}, test_acc=0.3)])
    runs = load_runs(root)
    assert swept(runs) == ["lam"]
    assert sorted({r.row for r in runs}) == ["fedavg", "heterofl λ=-2", "heterofl λ=-5"]
    points = sweep_points(runs, "lam")
    assert list(points) == [("mnist/lr", "min_max")]
    assert points[("mnist/lr", "min_max")]["heterofl"] == [(-5.0, pytest.approx(0.85), pytest.approx(0.75)),
                                                          (-2.0, pytest.approx(0.60), pytest.approx(0.25))]
    out, table = write_report(root)
    assert "| heterofl λ=-5 | 0.8500 ± 0.0707 |" in table and "| heterofl λ=-2 | 0.6000 (n=1) |" in table
    assert (out / "accuracy_vs_lambda.png").exists()
    assert not (out / "accuracy_vs_fraction.png").exists() and not (out / "accuracy_vs_trigger_size.png").exists()


def test_task_class_accuracy_table(tmp_path):
    root = tmp_path / "res"
    for seed, task in ((0, 0.70), (1, 0.80)):
        folder = write_run(root, f"h{seed}", no_attack(heterofl(common_args__random_seed=seed)),
                           acc_rows(final=0.5, best=0.6))
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "final_acc_task": task,
                                                         "final_watermark_share": task - 0.6}))
    write_run(root, "f", no_attack(fedavg()), acc_rows(final=0.9, best=0.9))  # no column: FedAvg's = final
    runs = load_runs(root)
    md, csv_text = accuracy_table(runs)
    task_part = md.split("watermark output ignored")[1].split("watermark class")[0]
    # HeteroFL: mean of 0.70 and 0.80 = 0.75, sample std 0.0707; FedAvg falls back to its final 0.9
    assert "| heterofl | 0.7500 ± 0.0707 |" in task_part and "| fedavg | 0.9000 (n=1) |" in task_part
    assert "final_acc_task_mean" in csv_text.splitlines()[0]
    # the watermark class's share: HeteroFL (0.1 + 0.2) / 2 = 0.15, sample std 0.0707; FedAvg has no such output
    share_part = md.split("watermark class")[1]
    assert "| heterofl | 0.1500 ± 0.0707 |" in share_part and "| fedavg | 0.0000 (n=1) |" in share_part
    # without HeteroFL runs the table is left out
    assert "watermark output ignored" not in accuracy_table([r for r in runs if r.defense == "fedavg"])[0]


def test_sweep_panels_per_defense_when_one_defense_runs_under_several_attacks(tmp_path):
    root = tmp_path / "res"
    # HeteroFL alone, λ -5 and -2, under sign flip and without attack (Fig. 10's layout)
    for lam, acc in ((-5.0, 0.8), (-2.0, 0.7)):
        write_run(root, f"sf,{lam}", heterofl(lam=lam, attack_args__attack_type="sign_flip"),
                  [removal_row(0, 20, {}, test_acc=acc)])
        write_run(root, f"none,{lam}", no_attack(heterofl(lam=lam)), [removal_row(0, 0, {}, test_acc=acc + 0.1)])
    panels = figures.sweep_panels(load_runs(root), "lam")
    assert list(panels) == ["MNIST/LR, HeteroFL"]  # one panel, a line per attack
    assert panels["MNIST/LR, HeteroFL"] == {
        "no attack": [(-5.0, pytest.approx(0.9), pytest.approx(math.nan, nan_ok=True)),
                      (-2.0, pytest.approx(0.8), pytest.approx(math.nan, nan_ok=True))],
        "sign flipping": [(-5.0, 0.8, 0.0), (-2.0, 0.7, 0.0)]}
    # two defenses under one attack (Fig. 9's layout): a panel per attack, a line per defense
    other = tmp_path / "frac"
    for f in (10, 20):
        write_run(other, f"fedavg,{f}", fedavg(attack_args__byzantine_client_num=f), [removal_row(0, f, {}, test_acc=0.5)])
        write_run(other, f"hetero,{f}", heterofl(attack_args__byzantine_client_num=f), [removal_row(0, f, {}, test_acc=0.8)])
    panels = figures.sweep_panels(load_runs(other), "fraction")
    assert list(panels) == ["MNIST/LR: Min-Max"] and sorted(panels["MNIST/LR: Min-Max"]) == ["FedAvg", "HeteroFL"]


def test_sweep_panel_without_attackers_says_so_instead_of_an_empty_arsr_axis(tmp_path, monkeypatch):
    root = tmp_path / "res"
    # FedAvg and HeteroFL at q = 0.1 and 0.5, without attack and under Min-Max: a panel per attack
    for q in (0.1, 0.5):
        for name, rule in (("f", fedavg), ("h", heterofl)):
            write_run(root, f"{name},none,{q}", no_attack(rule(data_args__partition_alpha=q)),
                      [removal_row(0, 0, {}, test_acc=0.8)])
            write_run(root, f"{name},mm,{q}", rule(data_args__partition_alpha=q), [removal_row(0, 20, {}, test_acc=0.6)])
    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, legend_axes=None: figs.append(fig) or path)
    figures.plot_sweeps(load_runs(root), tmp_path)
    (fig,) = figs
    top, bottom = fig.axes[:2], fig.axes[2:]
    titles = [ax.get_title() for ax in top]
    arsr = dict(zip(titles, bottom))
    assert sorted(titles) == ["MNIST/LR: Min-Max", "MNIST/LR: no attack"]
    assert len(arsr["MNIST/LR: Min-Max"].get_lines()) == 2 and not arsr["MNIST/LR: Min-Max"].texts
    assert not arsr["MNIST/LR: no attack"].get_lines()
    assert [t.get_text() for t in arsr["MNIST/LR: no attack"].texts] == ["no attackers: no ARSR"]


def test_fraction_and_trigger_size_sweeps(tmp_path):
    root = tmp_path / "res"
    # attacker counts 10 and 20 of 100 clients -> fractions 0.1 and 0.2; the no-attack run has none
    for f, acc in ((10, 0.8), (20, 0.6)):
        write_run(root, f"fedavg,f={f}", fedavg(attack_args__byzantine_client_num=f),
                  [removal_row(0, f, {}, test_acc=acc)])
    write_run(root, "fedavg,none", no_attack(fedavg()), [removal_row(0, 0, {}, test_acc=0.9)])
    runs = load_runs(root)
    assert swept(runs) == ["fraction"]
    assert sorted({r.column for r in runs}) == ["min_max 10%", "min_max 20%", "none"]
    assert sweep_points(runs, "fraction") == {("mnist/lr", "min_max"): {"fedavg": [(0.1, 0.8, 0.0), (0.2, 0.6, 0.0)]}}
    out, table = write_report(root)
    assert "| defense | none | min_max 10% | min_max 20% |" in table and "| fedavg | 0.9000 | 0.8000 | 0.6000 |" in table
    assert (out / "accuracy_vs_fraction.png").exists() and not (out / "accuracy_vs_lambda.png").exists()

    # |D_trg| 4 and 8 for HeteroFL; the same value everywhere else -> only the trigger-size plot
    other = tmp_path / "trg"
    for size, acc in ((4, 0.7), (8, 0.75)):
        write_run(other, f"trg={size}", heterofl(data_args__trigger_size=size), [removal_row(0, 20, {}, test_acc=acc)])
    runs = load_runs(other)
    assert swept(runs) == ["trigger_size"]
    assert sweep_points(runs, "trigger_size")[("mnist/lr", "min_max")]["heterofl"] == [(4, 0.7, 0.0), (8, 0.75, 0.0)]
    out, table = write_report(other)
    assert [p.name for p in sorted(out.glob("accuracy_vs_*.png"))] == ["accuracy_vs_trigger_size.png"]
    # the row label's bars are escaped: the row still has exactly two cells (label, accuracy)
    row = next(line for line in table.splitlines() if line.startswith("| heterofl \\|D_trg\\|=8 |"))
    assert row == "| heterofl \\|D_trg\\|=8 | 0.7500 |"


def test_sweep_axes_log_for_sizes_with_a_tick_at_each_size():
    plt = figures._pyplot()
    fig, (size_ax, share_ax) = plt.subplots(1, 2)
    place = figures._sweep_axis(size_ax, "trigger_size", [1, 2, 4, 16, 4])
    assert place(8) == 8 and size_ax.get_xscale() == "log"
    assert list(size_ax.get_xticks()) == [1, 2, 4, 16]
    assert [t.get_text() for t in size_ax.get_xticklabels()] == ["1", "2", "4", "16"]
    figures._sweep_axis(share_ax, "fraction", [0.1, 0.2])  # a share stays on a linear axis
    assert share_ax.get_xscale() == "linear"
    plt.close(fig)


def test_no_sweep_plots_when_values_agree(tmp_path):
    root = tmp_path / "res"
    ablation_results(root)  # one λ, one |D_trg|, one attacker count
    assert swept(load_runs(root)) == []
    out, _ = write_report(root)
    assert not list(out.glob("accuracy_vs_*.png"))


def test_oracle_agreement_table(tmp_path):
    """Adaptive runs record ``oracle_agrees`` per round; the table sums them over seeds per defense."""
    root = tmp_path / "res"
    adaptive = {"attack_args__attack_type": "adaptive"}
    rows = acc_rows(final=0.8, best=0.8)
    # Multi-Krum: seed 0 agrees in both rounds, seed 1 in one of two: 3/4 = 0.750
    for seed, agrees in ((0, (1.0, 1.0)), (1, (1.0, 0.0))):
        write_run(root, f"defense=multikrum,attack=adaptive,seed={seed}",
                  config(defense_args__defense_type="multikrum", defense_args__defense_params={},
                         common_args__random_seed=seed, **adaptive),
                  [dict(r, oracle_agrees=a) for r, a in zip(rows, agrees)])
    # FedAvg under Min-Max: no prediction, not in the table
    write_run(root, "defense=fedavg,attack=min_max", fedavg(), rows)
    out, _ = write_report(root)
    table = (out / "table_oracle.md").read_text()
    assert "| multikrum | 3/4 | 0.750 | 2 |" in table and "fedavg" not in table
    assert find(read_csv(out / "table_oracle.csv"), defense="multikrum")["rounds"] == "4"
    # without adaptive runs there is no such table
    (out / "table_oracle.md").unlink()
    for folder in root.glob("defense=multikrum*"):
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    out, _ = write_report(root)
    assert not (out / "table_oracle.md").exists()


@pytest.mark.parametrize("damage", {
    "summary_json": lambda run: (run / "summary.json").write_text('{"finished": true, "defense": '),
    "summary_binary": lambda run: (run / "summary.json").write_bytes(b"\xff\xfe\x00garbage"),
    "summary_list": lambda run: (run / "summary.json").write_text("[1, 2]"),
    "summary_fields": lambda run: (run / "summary.json").write_text('{"finished": true, "defense": 3}'),
    "metrics_missing": lambda run: (run / "metrics.csv").unlink(),
    "metrics_rounds": lambda run: (run / "metrics.csv").write_text("round,test_acc\nzero,0.5\n"),
    "config_yaml": lambda run: (run / "config.yaml").write_text("a: [1, 2\n"),
    "config_values": lambda run: (run / "config.yaml").write_text(
        "attack_args: {byzantine_client_num: many}\ntrain_args: {client_num_in_total: 100}\n"),
}.items(), ids=lambda item: item[0] if isinstance(item, tuple) else "")
def test_a_damaged_run_is_skipped_with_a_warning_naming_the_file(tmp_path, capsys, caplog, damage):
    name, spoil = damage
    root = tmp_path / "res"
    write_run(root, "seed=0", no_attack(fedavg(common_args__random_seed=0)), acc_rows(final=0.80, best=0.82))
    write_run(root, "seed=1", no_attack(fedavg(common_args__random_seed=1)), acc_rows(final=0.90, best=0.94))
    spoil(root / "seed=1")
    assert cli_main(["report", str(root)]) == 0
    file = {"summary": "summary.json", "metrics": "metrics.csv", "config": "config.yaml"}[name.split("_")[0]]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(root / "seed=1" / file) in warnings[0] and "\n" not in warnings[0]
    # the rest is reported: FedAvg's one intact seed, final 0.80, best 0.82
    assert "| fedavg | 0.8000 |" in capsys.readouterr().out
    assert find(read_csv(root / "report" / "table_accuracy.csv"), defense="fedavg")["seeds"] == "1"


def test_samples_per_client_sweep_labels_the_rows(tmp_path):
    root = tmp_path / "res"
    for samples, acc in ((40, 0.6), (192, 0.8), (40, 0.7)):
        folder = write_run(root, f"s{samples}_{acc}", no_attack(fedavg(common_args__random_seed=int(acc * 10))),
                           acc_rows(final=acc, best=acc))
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "samples_per_client": samples}))
    out, table = write_report(root)
    # 40 per client: seeds 0.6 and 0.7 -> 0.65 ± 0.0707; 192 per client: 0.8; rows in the order of the
    # numbers (as text, "192" would come before "40")
    assert "| fedavg 40/client | 0.6500 ± 0.0707 |\n| fedavg 192/client | 0.8000 (n=1) |" in table
    assert (out / "accuracy_vs_samples.png").exists()



def test_seeds_under_one_sample_cap_are_no_samples_sweep(tmp_path):
    root = tmp_path / "res"
    # cap 200 per client at seeds 0 and 1: the partitions give means of 192.17 and 193.4 -- one setting,
    # so one row, 0.70 and 0.80 -> 0.75 ± 0.0707; a third run with cap 40 makes the cap a sweep
    for seed, cap, mean, acc in ((0, 200, 192.17, 0.7), (1, 200, 193.4, 0.8), (0, 40, 39.6, 0.6)):
        folder = write_run(root, f"s{seed}_{cap}", no_attack(fedavg(common_args__random_seed=seed,
                                                                      data_args__max_samples_per_client=cap)),
                           acc_rows(final=acc, best=acc))
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "samples_per_client": mean}))
    runs = load_runs(root)
    assert swept([r for r in runs if r.name != "s0_40"]) == []
    assert swept(runs) == ["samples"]
    # the two seeds under cap 200 are one row, labelled by their pooled mean (192.17 + 193.4) / 2 = 192.785
    assert sorted({(r.row, r.samples) for r in runs}) == [("fedavg 193/client", pytest.approx(192.785)),
                                                          ("fedavg 40/client", pytest.approx(39.6))]
    md, _ = accuracy_table(runs)
    assert "| fedavg 40/client | 0.6000 (n=1) |" in md and "| fedavg 193/client | 0.7500 ± 0.0707 |" in md


def test_calibration_table_over_learning_rates(tmp_path):
    root = tmp_path / "res"

    def rows(accs):  # evaluated every round: round r (0-based) has accuracy accs[r]
        return [{"round": r, "test_acc": a, "time_train": 1.0, "time_server": 0.0} for r, a in enumerate(accs)]

    curve = [0.1 * (r + 1) / 25 for r in range(25)]  # 0.004 per round: 0.04 after 10 rounds, 0.1 after 25
    write_run(root, "lr0.01_s0", no_attack(fedavg(train_args__learning_rate=0.01)), rows(curve))
    write_run(root, "lr0.01_s1", no_attack(fedavg(train_args__learning_rate=0.01, common_args__random_seed=1)),
              rows([a + 0.02 for a in curve]))
    write_run(root, "lr0.002_s0", no_attack(fedavg(train_args__learning_rate=0.002)), rows([0.5] * 25))
    # an attacked run with another learning rate is not part of the calibration
    write_run(root, "attacked", fedavg(train_args__learning_rate=0.1), rows([0.9] * 25))
    out, _ = write_report(root)
    table = (out / "table_calibration.md").read_text()
    # rows by learning rate; columns after 10, 20 rounds and the last (25)
    assert "| run | R = 10 | R = 20 | R = 25 |" in table
    # lr 0.01: after 10 rounds 0.04 and 0.06 -> 0.05 ± 0.0141; after 20: 0.08/0.10 -> 0.09; after 25: 0.10/0.12
    assert "| fedavg lr=0.01 | 0.0500 ± 0.0141 | 0.0900 ± 0.0141 | 0.1100 ± 0.0141 |" in table
    assert "| fedavg lr=0.002 | 0.5000 | 0.5000 | 0.5000 |" in table
    assert "lr=0.1" not in table
    assert table.index("lr=0.002") < table.index("lr=0.01")  # by learning rate
    assert (out / "accuracy_vs_lr.png").exists()


def test_no_calibration_table_for_one_learning_rate(tmp_path):
    root = tmp_path / "res"
    write_run(root, "a", no_attack(fedavg()), acc_rows(final=0.8, best=0.8))
    write_run(root, "b", no_attack(fedavg(common_args__random_seed=1)), acc_rows(final=0.7, best=0.7))
    out, _ = write_report(root)
    assert not (out / "table_calibration.md").exists()


def with_summary(folder: Path, **fields: Any) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, **fields}))


def test_summary_table_rows(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, clean, task_clean, task_mm, task_sf in ((0, 0.80, 0.70, 0.60, 0.72), (1, 0.90, 0.80, 0.70, 0.74)):
        with_summary(write_run(a, f"f{seed}", no_attack(fedavg(common_args__random_seed=seed)),
                               acc_rows(final=clean, best=clean)), samples_per_client=600.0)
        def attacked(attack: str, **kw: Any) -> Dict[str, Any]:
            return heterofl(common_args__random_seed=seed, attack_args__attack_type=attack, **kw)

        for name, cfg, task in ((f"h{seed}", no_attack(heterofl(common_args__random_seed=seed)), task_clean),
                                (f"hmm{seed}", attacked("min_max"), task_mm), (f"hsf{seed}", attacked("sign_flip"), task_sf),
                                # neither an ablation variant nor FedAvg under attack is HeteroFL's worst case
                                (f"abl{seed}", attacked("min_max", steps=(1, 2)), 0.1)):
            with_summary(write_run(a, name, cfg, acc_rows(final=0.5, best=0.5)), final_acc_task=task,
                         samples_per_client=600.0)
    write_run(a, "fmm", fedavg(attack_args__attack_type="min_max"), acc_rows(final=0.2, best=0.2))
    with_summary(write_run(b, "f", no_attack(fedavg(data_args__max_samples_per_client=200)),
                           acc_rows(final=0.7, best=0.7)), samples_per_client=192.17)
    assert cli_main(["summary", f"A (lr 0.1)={a}", f"B={b}"]) == 0
    # A: FedAvg (0.80 + 0.90) / 2; HeteroFL's task accuracy clean (0.70 + 0.80) / 2, Min-Max (0.60 + 0.70) / 2
    # = 0.65 below sign flipping's (0.72 + 0.74) / 2 = 0.73; two evaluated rounds, seeds 0 and 1
    assert capsys.readouterr().out.splitlines() == [
        "| " + " | ".join(SUMMARY_HEADER) + " |", "|---" * 9 + "|",
        "| A (lr 0.1) | 100 / 20 | 600 (mean) | 2 | 2 | 0.8500 | 0.7500 | 0.6500 | min_max |",
        "| B | 100 / 20 | 192 (mean; cap 200) | 2 | 1 | 0.7000 | – | – | – |"]
    # a folder that sweeps a value mixes settings: refused, naming the sweep; a row without its folder too
    write_run(b, "f2", no_attack(fedavg(train_args__learning_rate=0.5)), acc_rows(final=0.7, best=0.7))
    assert cli_main(["summary", f"B={b}"]) == 2
    assert "sweep lr" in capsys.readouterr().err
    assert cli_main(["summary", str(a)]) == 2
    assert "expected LABEL=FOLDER" in capsys.readouterr().err


# -- sensitivity sweeps (Figs. 7 and 8) and the figures -----------------------------------------------
def test_heterogeneity_sweep_labels_and_draws_iid_last(tmp_path):
    root = tmp_path / "res"
    # q = 0.1 and 0.5 (Dirichlet) and an IID split (q -> infinity), FedAvg without attack
    for name, over, acc in (("q=0.1", {"data_args__partition_alpha": 0.1}, 0.6),
                            ("q=0.5", {"data_args__partition_alpha": 0.5}, 0.7),
                            ("iid", {"data_args__partition_method": "homo"}, 0.8)):
        write_run(root, name, no_attack(fedavg(**over)), acc_rows(final=acc, best=acc))
    runs = load_runs(root)
    assert swept(runs) == ["q"]
    assert sorted(r.row for r in runs) == ["fedavg IID", "fedavg q=0.1", "fedavg q=0.5"]
    assert rows_of(runs) == ["fedavg q=0.1", "fedavg q=0.5", "fedavg IID"]  # numeric, IID (q = inf) last
    assert sweep_points(runs, "q")[("mnist/lr", "none")]["fedavg"] == [(0.1, 0.6, pytest.approx(math.nan, nan_ok=True)),
                                                                       (0.5, 0.7, pytest.approx(math.nan, nan_ok=True)),
                                                                       (math.inf, 0.8, pytest.approx(math.nan, nan_ok=True))]
    out, table = write_report(root)
    assert "| fedavg IID | 0.8000 |" in table and (out / "accuracy_vs_heterogeneity.png").exists()


def test_gamma_init_and_perturbation_sweep(tmp_path):
    root = tmp_path / "res"
    # the adaptive attack against HeteroFL with gamma_init 0.01 and 10 (the default, not written), and
    # perturbations unit_vec and std (the default): two swept values, both in the row label
    for pert, gamma, acc in (("unit_vec", 0.01, 0.5), ("unit_vec", None, 0.6), (None, 0.01, 0.7), (None, None, 0.8)):
        params = {k: v for k, v in (("perturbation", pert), ("gamma_init", gamma)) if v is not None}
        write_run(root, f"{pert},{gamma}", heterofl(attack_args__attack_type="adaptive", attack_args__attack_params=params),
                  [removal_row(0, 20, {}, test_acc=acc, oracle_agrees=1.0)])
    runs = load_runs(root)
    assert swept(runs) == ["gamma_init", "perturbation"]
    # the oracle table has a row per swept variant, each with its one agreeing round
    oracle_md, _ = oracle_table(runs)
    assert "| heterofl unit_vec γ_init=0.01 | 1/1 | 1.000 | 1 |" in oracle_md and oracle_md.count("| 1/1 |") == 4
    assert rows_of(runs) == ["heterofl std γ_init=0.01", "heterofl std γ_init=10",
                             "heterofl unit_vec γ_init=0.01", "heterofl unit_vec γ_init=10"]
    # one line per perturbation, γ_init on the x axis
    points = sweep_points(runs, "gamma_init")[("mnist/lr", "adaptive")]
    assert points == {"heterofl std": [(0.01, 0.7, 0.0), (10.0, 0.8, 0.0)],
                      "heterofl unit_vec": [(0.01, 0.5, 0.0), (10.0, 0.6, 0.0)]}
    out, _ = write_report(root)
    assert (out / "accuracy_vs_gamma_init.png").exists()
    assert not (out / "accuracy_vs_perturbation.png").exists()  # a category labels lines, it is no x axis


def test_figure_labels_and_seed_bands(tmp_path):
    assert figures.pretty("heterofl[1-2] λ=-2") == "HeteroFL steps 1-2 λ=-2"
    assert figures.pretty("heterofl[1]") == "HeteroFL step 1"
    assert figures.pretty("min_max 30%") == "Min-Max 30%" and figures.pretty("fashion_mnist/cnn") == "Fashion-MNIST/CNN"
    assert figures.pretty("fedml:krum") == "fedml:krum"
    root = tmp_path / "res"
    # two seeds: accuracies 0.5 / 0.7 after round 0 and 0.6 / 0.9 after round 1 -> mean 0.6, 0.75; band
    # from the lower to the higher seed
    for seed, (a0, a1) in ((0, (0.5, 0.6)), (1, (0.7, 0.9))):
        write_run(root, f"s{seed}", no_attack(fedavg(common_args__random_seed=seed)), acc_rows(final=a1, best=a0))
    runs = load_runs(root)
    rounds, mean, low, high = figures.accuracy_curves(runs)[("mnist/lr", "fedavg", "none")]
    assert rounds == [0, 1] and mean == pytest.approx([0.6, 0.75]) and low == [0.5, 0.6] and high == [0.7, 0.9]
    assert figures.setting(runs) == "lr 0.1 · 100 clients · 2 rounds · 2 seeds"


def test_ablation_and_trigger_share_figures(tmp_path):
    root = tmp_path / "res"
    for name, cfg in (("fedavg", fedavg()), ("h12", heterofl(steps=(1, 2))), ("h", heterofl())):
        write_run(root, name, cfg, [removal_row(0, 20, {}, test_acc=0.5)])
    out, _ = write_report(root)
    assert (out / "ablation_mnist_lr.png").exists() and not list(out.glob("trigger_share_*.png"))
    other = tmp_path / "share"
    for samples in (40.0, 200.0):
        for name, cfg in (("none", no_attack(heterofl())), ("mm", heterofl())):
            folder = write_run(other, f"{name},{samples}", cfg, [removal_row(0, 20, {}, test_acc=0.6)])
            summary = json.loads((folder / "summary.json").read_text())
            (folder / "summary.json").write_text(json.dumps({**summary, "samples_per_client": samples,
                                                             "final_acc_task": 0.6, "final_watermark_share": 0.01}))
    out, _ = write_report(other)
    assert (out / "trigger_share_mnist_lr.png").exists() and (out / "accuracy_vs_samples.png").exists()
