import json

from tinyship.runtime.bench import markdown, sample_input
from tinyship.runtime.cli import main


def test_bench_measures_cold_start_memory_and_a_latency_grid(fp32_bundle, tmp_path, capsys):
    assert main(["bench", str(fp32_bundle), "--batch-sizes", "1,2", "--lengths", "8,16", "--threads", "1",
                 "--repeat", "3", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["task"] == "text-classification" and report["size_bytes"] > 0
    assert 0 < report["cold_start"]["seconds"] < 60 and report["cold_start"]["peak_rss_mb"] > 10
    assert ([(p["batch_size"], p["tokens"], p["threads"]) for p in report["latency"]]
            == [(1, 8, 1), (1, 16, 1), (2, 8, 1), (2, 16, 1)])
    for point in report["latency"]:
        assert 0 < point["median_ms"] <= point["p90_ms"] <= point["p99_ms"]
        assert point["per_second"] == point["batch_size"] / point["median_ms"] * 1e3
    assert (tmp_path / "bench.md").read_text() == markdown(report) and "| 2 | 16 | 1 |" in capsys.readouterr().out


def test_sample_inputs_have_the_asked_length(fp32_bundle):
    from tinyship.runtime import load

    tokenizer = load(fp32_bundle).tokenizer
    assert len(tokenizer.encode(sample_input(False, 64, 1)[0]).ids) == 64
    question, context = sample_input(True, 64, 2)[1]
    assert len(tokenizer.encode(question, context).ids) == 64
