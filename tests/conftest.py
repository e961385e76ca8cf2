"""Shared fixtures: a tiny BERT classifier built from a config (real MiniLM tokenizer), and its bundle."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "HF_MODULES_CACHE" not in os.environ:  # where trust_remote_code tests import a pruned model's code, then removed
    os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="tinyship-hf-modules-")
    atexit.register(shutil.rmtree, os.environ["HF_MODULES_CACHE"], ignore_errors=True)

import pytest  # noqa: E402

from tinyship.runtime.cli import configure_logging  # noqa: E402
from tinyship.runtime.data import DataConfig  # noqa: E402

configure_logging()  # tinyship's progress messages on stdout, as the CLI prints them (tests read some)
collect_ignore = [] if os.environ.get("TINYSHIP_EDGE") else ["edge"]  # `make test-edge` runs those

LABELS = ["negative", "positive"]


@pytest.fixture(scope="session")
def minilm_dir():
    from tinyship.compress.training import default_base_model

    return default_base_model()


def make_tiny_model(path, minilm_dir, layers=4, seed=0, initializer_range=0.02):
    """A randomly initialised 4-layer, 32-wide BERT classifier with MiniLM's tokenizer, saved to path.
    A large initializer_range makes every layer (and so a student's choice of layers) change the logits."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, num_labels=2, id2label=dict(enumerate(LABELS)),
        initializer_range=initializer_range, label2id={n: i for i, n in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_factory(minilm_dir):
    return lambda path, **kwargs: make_tiny_model(path, minilm_dir, **kwargs)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_dir):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", minilm_dir)


@pytest.fixture(scope="session")
def small_data():
    """The built-in Rotten Tomatoes set, cut to 64 examples per split."""
    return DataConfig(limit=64, max_length=64)


@pytest.fixture(scope="session")
def fp32_bundle(tmp_path_factory, tiny_model_dir, small_data):
    from tinyship.export import ExportConfig, export

    out = tmp_path_factory.mktemp("bundles") / "fp32"
    return export(ExportConfig(model=str(tiny_model_dir), output=str(out), quantize="none", data=small_data))
