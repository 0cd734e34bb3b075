"""benchmarks/rounds.py runs end to end in its ``--quick`` setting (4 clients of 8 samples, 1 round, every
model, every cell in this process) and reports every cell; its FLOP counts against hand counts. No timing
assertions."""
import functools

import pytest
import torch


def test_round_benchmark_reports_every_cell(tmp_path, monkeypatch, benchmark):
    import fedml_heterofl.simulation.workload as workload

    bench = benchmark("rounds")
    # every cell builds its workload; load each dataset once for all cells (build_workload does not modify it)
    monkeypatch.setattr(workload, "load_dataset", functools.lru_cache(maxsize=None)(workload.load_dataset))
    quick = bench.QUICK
    rows = bench.run_benchmark(bench.MODELS, rounds={m: quick["rounds"] for m in bench.MODELS}, clients=quick["clients"],
                               threads=1, seed=0, workdir=tmp_path, samples_per_client=quick["samples_per_client"],
                               plain_batches=quick["plain_batches"], plain_seconds=quick["plain_seconds"],
                               in_process=True)
    assert [(r["model"], r["system"]) for r in rows] == [(m, s) for m in bench.MODELS for s in bench.SYSTEMS[m]]
    for r in rows:
        assert len(r["round_seconds"]) == 1 and r["seconds"] > 0
        if r["system"] in ("fedavg", "heterofl", "loop", "vectorised"):
            assert r["train"] > 0 and r["server"] > 0
        if r["system"] == "plain":
            assert r["gflops"] > 0 and list(r["batch_gflops"]) == [str(r["batch"])]
        else:
            assert r["flops"] > 0 and r["gflops"] == pytest.approx(r["flops"] / r["seconds"] / 1e9)
    # the CNN's round: 4 clients x 8 images (+ 4 trigger images each for HeteroFL) at FedML's 71.6 MFLOP
    cnn = {r["system"]: r for r in rows if r["model"] == "cnn"}
    assert cnn["fedavg"]["flops"] == pytest.approx(32 * CNN_TRAIN_FLOPS, rel=1e-6)
    assert cnn["fedml_sp"]["flops"] == pytest.approx(32 * CNN_TRAIN_FLOPS, rel=1e-6)
    assert cnn["heterofl"]["flops"] == pytest.approx(48 * CNN_TRAIN_FLOPS, rel=1e-3)  # one more output row
    table = bench.markdown_table(rows).splitlines()
    assert table[0].startswith("| model | peer | peer s/round | ours FedAvg s/round")
    assert [line.split("|")[1].strip() for line in table[2:]] == list(bench.MODELS)
    assert [line.split("|")[2].strip() for line in table[2:]] == ["fedml_sp", "fedml_sp", "loop"]
    assert all(c.strip() != "-" for line in table[3:] for c in line.split("|")[2:-1])  # CNN, RNN: every cell
    verdicts = bench.verdicts(rows)
    assert len(verdicts) == 7 and all(("MET" in v) for v in verdicts)
    assert all("limit:" in v for v in verdicts if v.startswith("rnn") and "faster" in v and "NOT MET" in v)
    # FedML's home and our run folders went to the work folder
    assert (tmp_path / "bench_fedml_sp_lr" / ".fedml").is_dir()
    assert (tmp_path / "bench_heterofl_cnn" / "metrics.csv").is_file()
    assert (tmp_path / "bench_loop_rnn" / "metrics.csv").is_file()


#: FedML's CNN_DropOut, by hand: 2 FLOPs per multiply-add; a layer's backward costs twice its forward
#: (input and weight gradients) except the first convolution, whose input needs no gradient
CNN_FORWARD = {"conv1": 26 * 26 * 32 * 9, "conv2": 24 * 24 * 64 * 32 * 9, "dense1": 9216 * 128, "dense2": 128 * 10}
CNN_TRAIN_FLOPS = 2 * (3 * sum(CNN_FORWARD.values()) - CNN_FORWARD["conv1"])


def test_train_flops_per_sample_by_hand(benchmark):
    bench = benchmark("rounds")
    from fedml_heterofl.models import build_model

    cnn = build_model("cnn", 10)
    assert bench.train_flops_per_sample(cnn, torch.rand(4, 1, 28, 28), torch.arange(4)) == pytest.approx(CNN_TRAIN_FLOPS)
    # the 2-layer LSTM (8 -> 256 -> 256) over 80 steps and the dense head: per step and layer the input and the
    # recurrent products (4H x in, 4H x H); the embedding lookup is no product
    H, T = 256, 80
    lstm = T * (4 * H * 8 + 4 * H * H + 4 * H * H + 4 * H * H)
    rnn_forward = lstm + H * 80
    rnn = build_model("rnn", 80)
    got = bench.train_flops_per_sample(rnn, torch.randint(0, 80, (2, 80)), torch.arange(2))
    assert got == pytest.approx(2 * 3 * rnn_forward, rel=0.01)


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
    loop = settings_from_dict(bench.bench_config("loop", "rnn", clients=20, rounds=2, seed=0, rnn_windows=50))
    ours = settings_from_dict(bench.bench_config("fedavg", "rnn", clients=20, rounds=2, seed=0, rnn_windows=50))
    assert loop.train_args.vectorised_training is False and ours.train_args.vectorised_training is None
    assert loop.train_args.client_threads == 1 and ours.train_args.client_threads is None
    for s in (loop, ours):
        assert (s.data_args.dataset, s.data_args.max_clients, s.data_args.max_samples_per_client) == ("shakespeare", 20, 50)
        assert s.train_args.batch_size == 10 and s.attack_name is None and s.defense_name == "fedavg"
    with pytest.raises(ValueError, match="system"):
        bench.run_cell("nope", "lr", workdir=tmp_path)
    with pytest.raises(ValueError, match="system: 'loop' for model lr; allowed: fedml_sp, fedavg, heterofl"):
        bench.run_cell("loop", "lr", workdir=tmp_path)


def test_plain_step_rates_time_both_ways_of_using_the_threads(benchmark):
    bench = benchmark("rounds")
    from fedml_heterofl.models import build_model

    model = build_model("cnn", 10)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    threads = torch.get_num_threads()
    rates = bench.plain_step_rates(model, x, y, [4, 8], lr=0.01, seconds=0.0, threads=2)
    assert set(rates) == {"4", "4 x 2", "8", "8 x 2"} and all(r > 0 for r in rates.values())
    assert torch.get_num_threads() == threads
