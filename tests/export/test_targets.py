"""Edge targets (export/targets.py): the mobile target's ORT-format model and operator list, added at export or to a
bundle already made, and run by the runtime with the same outputs as the ONNX model."""

import json
import shutil

import numpy as np
import pytest

from tinyship.export import ExportConfig, export
from tinyship.export.targets import ConvertConfig, convert, operators, web_tokenizer_config
from tinyship.export.targets import web as web_target
from tinyship.runtime import load
from tinyship.runtime.bench import bench
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import main
from tinyship.runtime.data import load_examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import sha256_file

TEXTS = ["a gripping, funny and moving film", "dull", "the plot wanders and the acting is wooden " * 20, "not bad"]


@pytest.fixture(scope="module")
def int8_mobile_bundle(tiny_model_dir, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mobile") / "bundle"
    return export(ExportConfig(model=str(tiny_model_dir), output=str(out), data=small_data, quantize="dynamic",
                               objective="size", targets=("mobile",)))  # INT8: the smallest, whatever the timings


@pytest.fixture
def converted(fp32_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    return convert(ConvertConfig(bundle=str(bundle), targets=("mobile",)))


def check_mobile_target(bundle, texts):
    manifest = read_manifest(bundle)  # every file listed, with its sha256
    mobile = manifest["targets"]["mobile"]
    assert {mobile["model"], mobile["operators_config"]} <= set(manifest["files"])
    assert mobile["operators"] == operators(bundle / mobile["operators_config"])
    assert any("MatMul" in op or "Attention" in op for ops in mobile["operators"].values() for op in ops)
    onnx_model, ort_model = load(bundle, threads=1), load(bundle, threads=1, model_format="ort")
    assert ort_model.session._model_path.endswith("model.ort")
    np.testing.assert_array_equal(ort_model.logits(texts), onnx_model.logits(texts))
    return manifest


def test_export_adds_the_mobile_target_and_the_ort_model_gives_identical_outputs(int8_mobile_bundle, small_data):
    texts = load_examples(small_data, "test").texts + TEXTS
    manifest = check_mobile_target(int8_mobile_bundle, texts)
    assert manifest["precision"] == "int8"
    ops = {op for ops in manifest["targets"]["mobile"]["operators"].values() for op in ops}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}  # the INT8 graph's own
    assert "NchwcTransformer" in manifest["targets"]["mobile"]["optimized_without"]  # x86-only layouts left out


def test_convert_adds_the_mobile_target_to_a_bundle_already_made(converted, fp32_bundle):
    manifest = check_mobile_target(converted, TEXTS)
    before = read_manifest(fp32_bundle)
    assert {k: v for k, v in manifest["files"].items() if k in before["files"]} == before["files"]
    assert [p.name for p in converted.parent.iterdir()] == ["bundle"]  # no temporary directory left
    again = convert(ConvertConfig(bundle=str(converted), targets=("mobile",)))  # rerunning replaces it
    assert read_manifest(again)["targets"] == manifest["targets"]


def test_bench_counts_the_model_file_it_runs(converted):
    sizes = {fmt: bench(converted, (1,), (16,), (1,), repeat=3, model_format=fmt)["size_bytes"]
             for fmt in ("onnx", "ort")}
    files = {p.name: p.stat().st_size for p in converted.iterdir() if p.name != "tinyship.json"}
    assert sizes["onnx"] == sum(files.values()) - files["model.ort"]
    assert sizes["ort"] == sum(files.values()) - files["model.onnx"]


def test_cli_convert_then_predict_with_the_ort_model(fp32_bundle, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    assert main(["convert", str(bundle), "--target", "mobile"]) == 0
    outputs = []
    for extra in ([], ["--model-format", "ort"]):
        capsys.readouterr()
        assert main(["predict", str(bundle), *TEXTS, "--json", *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == len(TEXTS)
    assert json.loads(outputs[1].splitlines()[0])["label"] in ("negative", "positive")


def test_the_web_target_is_the_folder_transformers_js_reads(converted, fp32_bundle, int8_mobile_bundle, tmp_path):
    """The fp32 bundle (converted) and an INT8 one: config with the labels and the dtype, the model under onnx/ by
    transformers.js's name for that dtype, every file listed with its sha256; earlier targets survive a conversion."""
    int8 = tmp_path / "int8"
    shutil.copytree(int8_mobile_bundle, int8)
    for bundle, dtype, name in ((converted, "fp32", "model.onnx"), (int8, "q8", "model_quantized.onnx")):
        convert(ConvertConfig(bundle=str(bundle), targets=("web",)))
        manifest = read_manifest(bundle)
        web = manifest["targets"]["web"]
        assert "mobile" in manifest["targets"] and (bundle / "model.ort").is_file()
        assert web["dtype"] == dtype and web["task"] == "text-classification"
        folder = bundle / web["folder"]
        assert sorted(web["files"]) == ["config.json", f"onnx/{name}", "tokenizer.json", "tokenizer_config.json"]
        assert all(sha256_file(folder / path) == digest for path, digest in web["files"].items())
        assert (folder / "onnx" / name).read_bytes() == (bundle / "model.onnx").read_bytes()
        config = json.loads((folder / "config.json").read_text())
        assert config["transformers.js_config"] == {"dtype": dtype} and config["tinyship"] == {"task": manifest["task"]}
        assert config["id2label"] == {"0": "negative", "1": "positive"}
        assert json.loads((folder / "tokenizer_config.json").read_text()) == {
            "tokenizer_class": "BertTokenizer", "model_max_length": manifest["max_length"], "cls_token": "[CLS]",
            "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
        assert "web" not in manifest["files"]  # the folder lists its own files
    with pytest.raises(TinyshipError, match="transformers.js has no pipeline for text-regression"):
        web_target(converted, {**read_manifest(converted), "task": "text-regression"})


def test_a_tokenizer_without_type_ids_names_its_own_special_tokens():
    """An MPNet/RoBERTa-style tokenizer.json: the pair processor's tokens, the padding token among the added ones."""
    tokenizer = {"post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]},
                 "padding": None, "model": {"type": "WordPiece", "unk_token": "[UNK]"},
                 "added_tokens": [{"content": t} for t in ("<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>")]}
    assert web_tokenizer_config(tokenizer, {"inputs": ["input_ids", "attention_mask"], "max_length": 64}) == {
        "tokenizer_class": "PreTrainedTokenizer", "model_max_length": 64, "cls_token": "<s>", "sep_token": "</s>",
        "pad_token": "<pad>", "unk_token": "[UNK]", "mask_token": "<mask>"}


def test_bad_input(fp32_bundle, tmp_path, capsys):
    with pytest.raises(TinyshipError, match="unknown target 'tflite': use one of mobile, web"):
        ConvertConfig(bundle=str(fp32_bundle), targets=("tflite",))
    with pytest.raises(TinyshipError, match="unknown target 'web2'"):
        ExportConfig(model="m", targets=("web2",))
    with pytest.raises(TinyshipError, match="no target: give --target"):
        ConvertConfig(bundle=str(fp32_bundle))
    with pytest.raises(TinyshipError, match=r"has no ort model: add it with `tinyship convert .* --target mobile`"):
        load(fp32_bundle, model_format="ort")
    with pytest.raises(TinyshipError, match="model_format 'tflite': use one of onnx, ort"):
        load(fp32_bundle, model_format="tflite")
    with pytest.raises(TinyshipError, match="no bundle at"):
        convert(ConvertConfig(bundle=str(tmp_path / "missing"), targets=("mobile",)))
    assert main(["convert", str(fp32_bundle)]) == 2
    assert "tinyship convert: error: no target: give --target" in capsys.readouterr().err
