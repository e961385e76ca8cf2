"""ARM64: a bundle exported with the arm64 INT8 preset, run by tinyship's runtime in an aarch64 Python under qemu's
user-mode emulation, agrees with the same bundle on this x86 machine. Timing under emulation means nothing and is
not taken: `tinyship bench` on the device measures speed. Run by `make test-edge`, which installs the emulator and
the aarch64 Python; without them the test fails and says so."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyship.export import ExportConfig, export
from tinyship.runtime import load
from tinyship.runtime.data import load_examples

# The emulated core. qemu's default ("max": SVE, I8MM and more) gave this INT8 model wrong logits (about 0.2 where
# x86 gives 1.9); on Neoverse N1 (AWS Graviton2; the ISA of Raspberry Pi 5's Cortex-A76) they match x86. Real
# devices are not tested here.
CPU = "neoverse-n1"
ROOT = Path(__file__).resolve().parents[2]
ENV = ROOT / "runs" / "edge" / "arm64"  # tests/edge/arm64-env.sh writes it
LOGIT_TOLERANCE = 1e-3  # |ARM64 - x86| per logit; measured differences are about 1e-6
LONG = "the plot wanders and the acting is wooden, " * 30


@pytest.fixture(scope="module")
def arm64_bundle(tiny_model_dir, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("arm64") / "bundle"
    return export(ExportConfig(model=str(tiny_model_dir), output=str(out), data=small_data, quantize="dynamic",
                               preset="arm64", objective="size", targets=("mobile",)))  # INT8, whatever the timings


def arm64_logits(bundle, texts: list[str], work, model_format: str) -> tuple[np.ndarray, dict]:
    """The bundle's logits from the emulated aarch64 Python, and what that process said about itself."""
    qemu = shutil.which("qemu-aarch64-static")
    for missing, what in ((qemu is None, "qemu-aarch64-static (apt qemu-user-static)"),
                          (not (ENV / "site" / "onnxruntime").is_dir(), f"the aarch64 Python in {ENV}")):
        if missing:
            pytest.fail(f"{what} is missing: run `make test-edge`, which installs it")
    src = work / "src" / "tinyship"
    if not src.exists():
        src.mkdir(parents=True)
        (src / "runtime").symlink_to(ROOT / "runtime")
    (work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    command = [qemu, "-cpu", CPU, "-L", ENV / "rootfs", ENV / "rootfs/usr/bin/python3",
               ROOT / "tests/edge/arm64_logits.py", work / "src", ENV / "site", bundle, model_format,
               work / "texts.json", work / "logits.npy"]
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(work / "logits.npy"), json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model_format", ["onnx", "ort"])
def test_the_arm64_preset_bundle_agrees_with_x86_under_emulation(arm64_bundle, small_data, tmp_path, model_format):
    """The ONNX model, and the mobile target's ORT-format model (optimised on this x86 machine), on ARM64."""
    test = load_examples(small_data, "test")
    texts = [*test.texts, LONG, "ok"]
    x86 = load(arm64_bundle, threads=1).logits(texts)
    arm, process = arm64_logits(arm64_bundle, texts, tmp_path, model_format)
    assert process == {"machine": "aarch64", "torch_loaded": False}
    assert arm.shape == x86.shape
    np.testing.assert_allclose(arm, x86, atol=LOGIT_TOLERANCE, rtol=0)
    labels = np.array(test.labels)
    accuracy = {name: float(np.mean(out[: len(labels)].argmax(-1) == labels)) for name, out in (("x86", x86),
                                                                                               ("arm64", arm))}
    assert abs(accuracy["arm64"] - accuracy["x86"]) <= 0.005
