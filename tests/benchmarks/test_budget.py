"""The latency budget's front (benchmarks/budget): quick mode end to end on a tiny teacher."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget-front")
    args = [sys.executable, "-m", "benchmarks.budget.run", "--quick", "--teacher", str(tiny_model_dir),
            "--budgets", "1", "50", "--work", str(tmp / "work"), "--results", str(tmp / "results")]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp / "results" / "results.json").read_text()), tmp


def test_quick_mode_ships_within_the_budget_and_measures_every_system(quick, tiny_model_dir):
    report, tmp = quick
    [run] = report["budgets"]  # quick: the largest budget only
    assert run["budget_ms"] == 50 and run["error"] is None
    assert run["shipped"] == run["searched"][0] and run["by_hand"] == [run["searched"][0]]  # one trial each
    verdict = run["verdict"]
    assert verdict["within"] and verdict["shipped_ms"] <= 50 and verdict["at_least_by_hand"]
    roles = [s["role"] for s in report["systems"]]
    assert roles == [run["shipped"]] * 2 + ["teacher INT8"] * 2 + ["static embeddings from teacher"]
    systems = {s["id"]: s for s in report["systems"]}
    static = systems["static embeddings from teacher · model2vec"]
    assert static["scope"] == "end-to-end" and 0 <= static["accuracy"] <= 1 and static["size_bytes"] > 0
    shipped = systems[f"{run['shipped']} · ONNX"]
    assert shipped["accuracy"] == systems[f"{run['shipped']} · tinyship runtime"]["accuracy"]
    assert verdict["accuracy"] == shipped["accuracy"]
    teacher = systems["teacher INT8 · ONNX"]
    assert teacher["precision"] == "int8"
    assert teacher["size_bytes"] < (tiny_model_dir / "model.safetensors").stat().st_size / 3
    [comparison] = report["static_embeddings"]
    assert comparison["front_fastest"] == run["shipped"]
    assert comparison["front_fastest_gain"] == pytest.approx(verdict["accuracy"] - static["accuracy"])
    markdown = (tmp / "results" / "results.md").read_text()
    assert f"| 50 ms | {run['shipped']} |" in markdown and "static embeddings from teacher" in markdown
    assert (tmp / "results" / "front.png").stat().st_size > 0
    assert (tmp / "work" / "budget-50ms" / "students").is_symlink()  # students shared by the budgets
