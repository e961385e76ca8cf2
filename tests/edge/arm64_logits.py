"""Run under the emulated aarch64 Python: a bundle's logits for texts, as tinyship's runtime computes them there.
    python3 arm64_logits.py SRC SITE BUNDLE TEXTS_JSON OUT_NPY   (SRC holds tinyship/runtime, SITE the wheels)"""

import json
import platform
import sys

src, site, bundle, texts_file, out = sys.argv[1:6]
sys.path[:0] = [src, site]

import numpy as np  # noqa: E402

from tinyship.runtime import load  # noqa: E402

texts = json.loads(open(texts_file, encoding="utf-8").read())
np.save(out, load(bundle, threads=1).logits(texts))
print(json.dumps({"machine": platform.machine(), "torch_loaded": "torch" in sys.modules}))
