"""Run under the emulated aarch64 Python: a bundle's logits for texts, as tinyship's runtime computes them there.
    python3 arm64_logits.py SRC SITE BUNDLE MODEL_FORMAT TEXTS_JSON OUT_NPY   (SRC holds tinyship/runtime, SITE the
    wheels; MODEL_FORMAT onnx or ort)"""

import json
import platform
import sys

src, site, bundle, model_format, texts_file, out = sys.argv[1:7]
sys.path[:0] = [src, site]

import numpy as np  # noqa: E402

from tinyship.runtime import load  # noqa: E402

texts = json.loads(open(texts_file, encoding="utf-8").read())
np.save(out, load(bundle, threads=1, model_format=model_format).logits(texts))
print(json.dumps({"machine": platform.machine(), "torch_loaded": "torch" in sys.modules}))
