"""benchmarks/central_reference.py: the grid's model trained centrally on its clients' clean data."""
import math
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_central_reference_on_a_capped_mnist_grid(tmp_path, capsys, benchmark):
    cfg = yaml.safe_load(open(ROOT / "config" / "mnist_lr.yaml"))
    cfg["train_args"].update(client_num_in_total=4, client_num_per_round=4, batch_size=32)
    cfg["data_args"]["max_samples_per_client"] = 300
    cfg["attack_args"]["byzantine_client_num"] = 1
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": "base.yaml", "results_dir": str(tmp_path / "r"), "axes": {
        "attack": {"label_flip": {"attack_args.attack_type": "label_flip"}, "none": {"attack_args.enable_attack": False}},
        "defense": {"heterofl": {"defense_args.defense_type": "heterofl"}}}}, sort_keys=False))
    bench = benchmark("central_reference")
    assert bench.pick_cell(str(grid), None).attack_args.attack_type == "label_flip"  # the first cell
    with pytest.raises(ValueError, match="no cell 'nope'.*attack=none,defense=heterofl"):
        bench.pick_cell(str(grid), "nope")
    result = bench.central_curve(bench.pick_cell(str(grid), None), epochs=2)
    # 4 clients capped at 300 samples each (every MNIST partition of 4 clients holds more), batch 32
    assert result["train_samples"] == 1200 and result["test_samples"] == 10_000
    assert [r["sgd_steps"] for r in result["rows"]] == [math.ceil(1200 / 32), 2 * math.ceil(1200 / 32)]
    assert result["majority_share"] == pytest.approx(1135 / 10_000)  # digit 1 in MNIST's test set
    # 76 SGD steps of LR on clean MNIST are far above always answering "1"
    assert result["rows"][-1]["test_acc"] > 0.6
    assert bench.main(["--cf", str(grid), "--cell", "attack=none,defense=heterofl", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "most frequent test label's share: 0.1135" in out and "| 1 | 38 |" in out
