"""benchmarks/mpi_scale.py's pieces on hand-made inputs (the benchmark itself runs for minutes): the
/proc sampler, seconds per round, the table and the target verdicts. No timing assertions."""
import os
import sys


def test_measure_samples_a_child_processes_memory(benchmark):
    bench = benchmark("mpi_scale")
    code = "import time\nx = b'\\x01' * 80_000_000\ntime.sleep(1.0)\n"  # 80 MB, every page written
    out = bench.measure([sys.executable, "-c", code], dict(os.environ))
    peak = out["ranks"][None]  # not an MPI rank
    assert peak["VmHWM"] >= 80_000 and peak["RssAnon"] >= 75_000 and peak["Pss"] >= 75_000
    assert out["job_pss_kb"] >= 75_000 and out["wall"] >= 1.0


def test_seconds_per_round_is_the_median_after_the_first_round(benchmark):
    bench = benchmark("mpi_scale")
    rows = [{"time_train": a, "time_server": b, "time_eval": c}
            for a, b, c in [(5, 1, 1), (1, 0.5, 0.5), (2, 0.5, 0.5), (9, 0, 0)]]  # rounds: 7, 2, 3, 9
    assert bench.seconds_per_round(rows) == 3.0  # median of 2, 3, 9


def cell(model, np_, seconds, accs, server_kb, worker_kb=None):
    rows = [{"test_acc": str(a)} for a in accs]
    kb = lambda v: None if v is None else {"VmHWM": v, "RssAnon": v // 2, "Pss": v // 2}  # noqa: E731
    return {"model": model, "np": np_, "rows": rows, "seconds": seconds, "wall": 10.0, "server": kb(server_kb),
            "worker": kb(worker_kb), "job_pss_kb": 3 * 1024 ** 2}


def test_table_and_verdicts(benchmark):
    bench = benchmark("mpi_scale")
    cells = [cell("lr", None, 2.0, [0.5, 0.6], 1400 * 1024),
             cell("lr", 3, 1.0, [0.5, 0.6003], 1200 * 1024, 1300 * 1024)]
    floor = {"import torch": {"VmHWM": 700 * 1024, "RssAnon": 300 * 1024, "Pss": 400 * 1024},
             "import fedml + MPI": {"VmHWM": 1000 * 1024, "RssAnon": 500 * 1024, "Pss": 600 * 1024}}
    table = bench.markdown_table(cells, floor).splitlines()
    assert table[0].startswith("| model | processes | s/round | × standalone |")
    assert table[2].split("|")[2:6] == [" 1 (standalone) ", " 2.000 ", " 1.00 ", " 0.0000 "]
    assert table[3].split("|")[2:9] == [" 3 ", " 1.000 ", " 0.50 ", " 0.0003 ", " 1200 ", " 1300 ", " 600 "]
    assert table[-1].startswith("| floor: import fedml + MPI | 1 |")
    assert bench.verdicts(cells, floor) == [
        "lr -np 3 server: peak RSS 1200 MB (target <= 1500): MET; above the import floor 200 MB: MET",
        "lr -np 3 worker: peak RSS 1300 MB (target <= 500): NOT MET; above the import floor 300 MB: MET"]
