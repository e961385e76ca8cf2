import subprocess
import sys

SCRIPT = """
import sys
from tinyship.runtime import load
from tinyship.runtime.cli import main
classify = load(sys.argv[1])
assert classify(["a fine film"])[0]["label"] in ("negative", "positive")
heavy = sorted(m for m in ("torch", "transformers", "optimum", "onnx", "torch_pruning") if m in sys.modules)
print("heavy:", heavy)
"""


def test_runtime_leaves_torch_and_transformers_out(fp32_bundle):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(fp32_bundle)], capture_output=True, text=True, check=True)
    assert "heavy: []" in out.stdout
