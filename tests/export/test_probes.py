"""Probe packs: tiny random encoders written without weights, materialised and timed by `tinyship bench --profile`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from tinyship.export import probes
from tinyship.export.probes import ProbeConfig, probe_pack, shapes
from tinyship.runtime.cli import main
from tinyship.runtime.profile import PACK_FILE, Shape, materialise, profile, read_pack

TINY = Shape(32, 8, 2048, (4, 2), (64, 16))


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probes, "FAMILIES", ((32, 8), (48, 16)))
        patch.setattr(probes, "NAMED", {"tiny": TINY})
        return probe_pack(ProbeConfig(output=str(tmp_path_factory.mktemp("pack") / "probes"), fitting=12, held_out=3))


def test_shapes_are_reproducible_and_uneven_ones_differ_between_layers():
    assert shapes(5, seed=0, uneven=True) == shapes(5, seed=0, uneven=True)
    even = shapes(20, seed=0, uneven=False)
    assert all(len(set(s.heads)) == 1 and len(set(s.ffn)) == 1 for s in even)
    assert any(len(set(s.heads)) > 1 or len(set(s.ffn)) > 1 for s in shapes(20, seed=1, uneven=True))


def test_a_pack_holds_every_probe_and_variant_but_no_weights(pack):
    manifest = read_pack(pack)
    assert [p["name"] for p in manifest["probes"]] == [*(f"fit-{i:02d}" for i in range(12)),
                                                       *(f"held-{i:02d}" for i in range(3)), "tiny"]
    assert [p["held_out"] for p in manifest["probes"]].count(True) == 4
    for probe in manifest["probes"]:
        assert {"fp32", "int8-dynamic"} <= probe["variants"].keys()
        for graph in probe["variants"].values():
            assert (pack / graph["file"]).is_file() and graph["tensors"]
    assert not list(pack.rglob("*.weights"))
    vocab_rows = TINY.vocab * TINY.hidden * 4
    assert sum(f.stat().st_size for f in (pack / "tiny").iterdir()) < vocab_rows  # not even one table's worth


def test_materialised_weights_are_seeded_and_the_probe_runs(pack, tmp_path):
    probe = next(p for p in read_pack(pack)["probes"] if p["name"] == "tiny")
    graph = probe["variants"]["int8-dynamic"]
    files = [materialise(pack, graph, tmp_path / name, seed) for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    weights = [(f.parent / graph["weights"]).read_bytes() for f in files]
    assert weights[0] == weights[1] != weights[2]
    session = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    ids = np.arange(100, 116)[None]
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    (logits,) = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})
    assert logits.shape == (1, 2) and np.isfinite(logits).all()


def test_a_profile_times_every_variant_and_fits_a_model_per_setting(pack):
    report = profile(pack, lengths=(8, 16), threads=(1,), repeat=2)
    variants = sum(len(p["variants"]) for p in read_pack(pack)["probes"])
    assert len(report["measurements"]) == 2 * variants
    assert set(report["cost_models"]) == {"fp32/8/1", "fp32/16/1", "int8/8/1", "int8/16/1"}
    for model in report["cost_models"].values():
        assert model["fitted_on"] == 12 and set(model["held_out_error"]["per_probe"]) == {"held-00", "held-01",
                                                                                           "held-02", "tiny"}
        assert min(model["coefficients"].values()) >= 0


def test_bench_profile_writes_the_profile_with_the_base_install_only(pack, tmp_path):
    out = tmp_path / "device" / "profile.json"
    code = ("import sys; from tinyship.runtime.cli import main; rc = main(sys.argv[1:]);"
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "bench", str(pack), "--profile", str(out), "--lengths", "8",
                           "--threads", "1", "--repeat", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["cost_models"]) == {"fp32/8/1", "int8/8/1"} and report["pack"]["preset"]
    assert "held-out median error" in out.with_suffix(".md").read_text()


def test_bench_profile_of_a_directory_that_is_not_a_pack_says_how_to_make_one(tmp_path, capsys):
    assert main(["bench", str(tmp_path), "--profile", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert f"no {PACK_FILE}" in err and "tinyship probes --out" in err and "Traceback" not in err
