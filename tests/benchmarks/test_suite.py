"""The benchmark suite (benchmarks/suite): quick mode end to end on tiny models, resume, and the committed results."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suite"
SCHEMA = json.loads((SUITE / "schema.json").read_text())
ENGINES = ["pytorch", "torch.ao-int8", "onnxruntime", "onnxruntime", "transformers-pipeline", "optimum-pipeline"]


def load(name: str):
    return importlib.import_module(f"benchmarks.suite.{name}")


def run_suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.suite.run", *args], capture_output=True, text=True,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def quick(tiny_model_dir, tiny_model_factory, fp32_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    student = tiny_model_factory(tmp / "student", layers=2, seed=1)
    args = ["--quick", "--teacher", str(tiny_model_dir), "--student", str(student), "--bundle", str(fp32_bundle),
            "--base-teacher", str(tiny_model_dir), "--base-bundle", str(fp32_bundle),
            "--work", str(tmp / "work"), "--results", str(tmp / "results")]
    first = run_suite(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    return args, tmp / "results", first


def test_quick_mode_measures_every_system_and_writes_valid_reports(quick, tiny_model_dir, fp32_bundle):
    _, results, _ = quick
    report = json.loads((results / "results.json").read_text())
    jsonschema.validate(report, SCHEMA)
    systems = {s["id"]: s for s in report["systems"]}
    for role in ("teacher", "student", "pruned student"):
        assert [s["engine"] for s in report["systems"] if s["role"] == role] == ENGINES
    assert [s["engine"] for s in report["systems"] if s["role"] == "bundle"] == ["onnxruntime", "tinyship"]
    assert [s["id"] for s in report["systems"] if s["role"].startswith("base")] == ["base teacher · PyTorch fp32",
                                                                                    "base bundle · ONNX"]
    assert [h["pair"] for h in report["headline"]] == ["built-in", "base"]
    teacher, pipeline = systems["teacher · PyTorch fp32"], systems["teacher · transformers pipeline"]
    at = report["settings"]["headline_at"]

    def median(system):
        return next(p["median_ms"] for p in system["latency"]
                    if (p["batch_size"], p["tokens"], p["threads"]) == (at["batch_size"], at["tokens"], at["threads"]))

    bundle = systems["bundle · ONNX"]
    assert bundle["vs_teacher"]["faster"] == pytest.approx(median(teacher) / median(bundle))  # forward against forward
    student = systems["student · transformers pipeline"]
    assert student["vs_teacher"]["faster"] == pytest.approx(median(pipeline) / median(student))  # end to end likewise
    assert bundle["size_bytes"] == (fp32_bundle / "model.onnx").stat().st_size
    assert teacher["size_bytes"] == (tiny_model_dir / "model.safetensors").stat().st_size
    assert report["headline"][0]["smaller"] == pytest.approx(teacher["size_bytes"] / bundle["size_bytes"])
    # the same model gives the same answers however it is served
    assert systems["bundle · ONNX"]["accuracy"] == systems["bundle · tinyship runtime"]["accuracy"]
    one = 1 / teacher["test_examples"]
    assert abs(systems["teacher · ONNX fp32"]["accuracy"] - teacher["accuracy"]) <= one
    assert abs(pipeline["accuracy"] - teacher["accuracy"]) <= one
    assert systems["student · ONNX INT8"]["size_bytes"] < systems["student · ONNX fp32"]["size_bytes"] / 3
    int8, cut = systems["student · ONNX INT8"], systems["student, vocabulary pruned · ONNX INT8"]
    assert cut["size_bytes"] < int8["size_bytes"] / 2  # a tiny student is mostly embeddings; 64 texts use few pieces
    assert report["vocabulary"] == {"smaller": int8["size_bytes"] / cut["size_bytes"],
                                    "accuracy_change": cut["accuracy"] - int8["accuracy"],
                                    "size_bytes": [int8["size_bytes"], cut["size_bytes"]],
                                    "accuracy": [int8["accuracy"], cut["accuracy"]]}
    headline = (results / "headline.md").read_text()
    assert "Vocabulary pruning (the student's INT8 ONNX" in headline and "The goal for a base-size teacher" in headline
    pruned = report["models"]["pruned student"]
    assert pruned["gop_per_sequence"]["128"] < report["models"]["student"]["gop_per_sequence"]["128"]
    assert all("achieved" in s for s in report["systems"] if s["engine"] == "onnxruntime")
    for name in ("accuracy_latency.png", "size.png", "latency_length.png"):
        image = (results / name).read_bytes()
        assert image.startswith(b"\x89PNG") and len(image) > 10_000
    text = (results / "results.md").read_text()
    assert (results / "headline.md").read_text() in text
    assert "| teacher · PyTorch fp32 | forward | fp32 |" in text


def test_a_rerun_resumes_from_the_measured_systems(quick):
    args, results, _ = quick
    before = json.loads((results / "results.json").read_text())
    again = run_suite(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("measured before, kept") == len(before["systems"]) + 1  # and the GEMM ceilings
    after = json.loads((results / "results.json").read_text())
    assert [s["latency"] for s in after["systems"]] == [s["latency"] for s in before["systems"]]
    assert after["ceilings"] == before["ceilings"]


def test_a_changed_input_is_made_and_measured_again(quick):
    args, results, _ = quick
    flops = args.index("--quick")
    again = run_suite(*args[:flops], "--prune-flops", "0.3", *args[flops:])
    assert again.returncode == 0, again.stderr[-3000:]
    for system in json.loads((results / "results.json").read_text())["systems"]:
        kept = f"{system['id']} ({system['scope']}): measured before, kept" in again.stdout
        assert kept == (system["role"] != "pruned student"), system["id"]


def test_bad_arguments_are_refused_with_the_fix(tmp_path):
    missing = run_suite("--quick", "--teacher", str(tmp_path / "nothing"), "--work", str(tmp_path))
    assert missing.returncode != 0 and "run `make demo` first" in missing.stderr
    readme = run_suite("--quick", "--readme", "README.md")
    assert readme.returncode != 0 and "drop --readme" in readme.stderr


def test_pareto_front_keeps_only_unbeaten_points():
    report = load("report")
    points = [(1.0, 0.80), (2.0, 0.79), (2.0, 0.85), (3.0, 0.84), (5.0, 0.90), (0.5, 0.60)]
    assert report.pareto(points) == [(0.5, 0.60), (1.0, 0.80), (2.0, 0.85), (5.0, 0.90)]


def test_readme_headline_block_is_rewritten_between_its_markers(tmp_path):
    run = load("run")
    headline = tmp_path / "headline.md"
    headline.write_text("| new | table |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{run.MARKERS[0]}\n| old |\n{run.MARKERS[1]}\nrest\n")
    run.rewrite_readme(readme, headline)
    assert readme.read_text() == f"intro\n{run.MARKERS[0]}\n| new | table |\n{run.MARKERS[1]}\nrest\n"
    readme.write_text("no markers\n")
    with pytest.raises(Exception, match="no headline block"):
        run.rewrite_readme(readme, headline)


def test_committed_results_follow_the_schema_and_the_readme_quotes_them():
    results = ROOT / "benchmarks" / "results" / "suite"
    report = json.loads((results / "results.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["mode"] == "full"
    run = load("run")
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(run.MARKERS[0]) + len(run.MARKERS[0]) + 1 : readme.index(run.MARKERS[1])]
    assert block == (results / "headline.md").read_text()


def test_compare_reports_changed_fields_and_latency_ratios():
    compare = load("compare")
    before = json.loads((ROOT / "benchmarks" / "results" / "suite" / "results.json").read_text())
    after = json.loads(json.dumps(before))
    changed, dropped = after["systems"][0], after["systems"].pop()
    accuracy = changed["accuracy"]
    changed["accuracy"] = accuracy + 0.01
    for point in changed["latency"]:
        point["median_ms"] *= 1.25
    result = compare.compare(before, after)
    rows = {row["system"]: row for row in result["rows"]}
    assert result["only_in_a"] == [dropped["id"]] and result["only_in_b"] == []
    assert rows[changed["id"]]["differs"] == {"accuracy": (accuracy, accuracy + 0.01)}
    assert list(rows[changed["id"]]["ratios"].values()) == pytest.approx([1.25] * len(changed["latency"]))
    unchanged = [row for name, row in rows.items() if name != changed["id"]]
    assert all(not row["differs"] and set(row["ratios"].values()) == {1.0} for row in unchanged)
    text = compare.markdown(result, "a.json", "b.json")
    assert f"| {changed['id']} | accuracy: " in text and f"Only in A: {dropped['id']}." in text
    with pytest.raises(Exception, match="share no measured grid point"):
        compare.markdown(compare.compare(before, {"systems": []}), "a", "b")
