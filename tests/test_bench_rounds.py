"""benchmarks/rounds.py runs end to end on a tiny cut of MNIST (4 clients, 32 samples each, 1 round,
both models, all three systems in this process) and reports every cell. No timing assertions."""
import functools

import pytest


def test_round_benchmark_reports_every_cell(tmp_path, monkeypatch, benchmark):
    import fedml_heterofl.simulation.workload as workload

    bench = benchmark("rounds")
    # every cell builds its workload; load MNIST once for all six (build_workload does not modify it)
    monkeypatch.setattr(workload, "load_dataset", functools.lru_cache(maxsize=None)(workload.load_dataset))
    rows = bench.run_benchmark(["lr", "cnn"], rounds={"lr": 1, "cnn": 1}, clients=4, threads=1, seed=0,
                               workdir=tmp_path, samples_per_client=32, in_process=True)
    assert [(r["model"], r["system"]) for r in rows] == [(m, s) for m in ("lr", "cnn") for s in bench.SYSTEMS]
    for r in rows:
        assert len(r["round_seconds"]) == 1 and r["seconds"] > 0
        if r["system"] != "fedml_sp":
            assert r["train"] > 0 and r["server"] > 0
    table = bench.markdown_table(rows).splitlines()
    assert table[0].startswith("| model | FedML sp FedAvg s/round | ours FedAvg s/round")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["lr", "cnn"]
    assert all("-" not in [c.strip() for c in line.split("|")[2:-1]] for line in table[2:])  # every cell filled
    verdicts = bench.verdicts(rows)
    assert len(verdicts) == 4 and all(v.endswith(("MET", "NOT MET")) for v in verdicts)
    # FedML's home and our run folders went to the work folder
    assert (tmp_path / "bench_fedml_sp_lr" / ".fedml").is_dir()
    assert (tmp_path / "bench_heterofl_cnn" / "metrics.csv").is_file()


def test_bench_config_is_paper_scale_without_attack(tmp_path, benchmark):
    bench = benchmark("rounds")
    from fedml_heterofl.settings import settings_from_dict

    fedavg = settings_from_dict(bench.bench_config("fedavg", "cnn", clients=100, rounds=2, seed=0))
    hetero = settings_from_dict(bench.bench_config("heterofl", "lr", clients=100, rounds=3, seed=0))
    assert fedavg.defense_name == "fedavg" and hetero.defense_name == "heterofl" and hetero.watermark
    for s in (fedavg, hetero):
        assert s.attack_name is None and s.f == 0
        assert (s.train_args.client_num_in_total, s.train_args.client_num_per_round) == (100, 100)
        assert (s.train_args.epochs, s.train_args.batch_size, s.data_args.dataset) == (1, 32, "mnist")
        assert s.validation_args.frequency_of_the_test > s.train_args.comm_round
    with pytest.raises(ValueError, match="system"):
        bench.run_cell("nope", "lr", workdir=tmp_path)
