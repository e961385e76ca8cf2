import json
import shutil

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForMaskedLM

from tinyship import runtime
from tinyship.compress import VocabularyConfig, prune_vocabulary, validate
from tinyship.compress.config import STAGE_FILE
from tinyship.compress.vocabulary import changed_pieces, kept_ids, slice_vocabulary
from tinyship.export import ExportConfig, export
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import main
from tinyship.runtime.errors import TinyshipError

CORPUS = ["a gripping, funny and moving film", "the plot wanders and the acting is wooden", "dull"]
KEPT_TEXT = ["the film is funny and gripping", "wooden acting, a dull plot", "moving"]  # only the corpus's words
UNSEEN = "screenwriter"  # one piece of MiniLM's vocabulary, in no corpus text


def logits(directory, texts):
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.inference_mode():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def tokens(directory, text):
    return AutoTokenizer.from_pretrained(str(directory)).tokenize(text)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory):
    """A tiny classifier whose logits are far enough apart (0.45 at least, here) that int8 keeps its labels."""
    return tiny_model_factory(tmp_path_factory.mktemp("vocabulary") / "model", initializer_range=0.2, seed=2)


@pytest.fixture(scope="module")
def pruned(model_dir, small_data):
    (model_dir.parent / "corpus.txt").write_text("\n".join(CORPUS) + "\n\n", encoding="utf-8")
    return prune_vocabulary(VocabularyConfig(model=str(model_dir), output_dir=str(model_dir.parent / "pruned"),
                                             data=small_data, corpus=str(model_dir.parent / "corpus.txt")))


def test_text_of_kept_pieces_gives_the_same_pieces_and_logits(pruned, model_dir):
    old, new = AutoTokenizer.from_pretrained(str(model_dir)), AutoTokenizer.from_pretrained(str(pruned))
    for text in KEPT_TEXT:
        old_ids, new_ids = old(text)["input_ids"], new(text)["input_ids"]
        assert old.convert_ids_to_tokens(old_ids) == new.convert_ids_to_tokens(new_ids)  # one to one, specials too
        assert old_ids != new_ids  # the same pieces under new ids
    torch.testing.assert_close(logits(pruned, KEPT_TEXT), logits(model_dir, KEPT_TEXT), atol=1e-5, rtol=1e-5)


def test_the_vocabulary_is_the_specials_characters_and_corpus_pieces(pruned, model_dir, small_data):
    old_vocab = AutoTokenizer.from_pretrained(str(model_dir)).get_vocab()
    new_tokenizer = AutoTokenizer.from_pretrained(str(pruned))
    new_vocab = new_tokenizer.get_vocab()
    characters = {p for p in old_vocab if len(p.removeprefix("##")) == 1}
    corpus = {p for text in CORPUS for p in tokens(model_dir, text)}
    specials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    assert set(new_vocab) == characters | corpus | specials
    assert sorted(new_vocab, key=new_vocab.get) == sorted(new_vocab, key=old_vocab.get)  # old order kept
    in_order = sorted(new_vocab, key=new_vocab.get)
    assert (pruned / "vocab.txt").read_text(encoding="utf-8").splitlines() == in_order
    config = json.loads((pruned / "config.json").read_text())
    assert config["vocab_size"] == len(new_vocab) and config["pad_token_id"] == new_vocab["[PAD]"] == 0
    assert new_tokenizer.pad_token_id == 0 and new_tokenizer.cls_token_id == new_vocab["[CLS]"] < 1000
    old_definition = json.loads((model_dir / "tokenizer.json").read_text())
    new_definition = json.loads((pruned / "tokenizer.json").read_text())
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        assert new_definition[part] == old_definition[part]
    stage = json.loads((pruned / STAGE_FILE).read_text())
    assert stage["vocabulary"] == {"before": len(old_vocab), "kept": len(new_vocab),
                                   "share": len(new_vocab) / len(old_vocab)}
    assert stage["parameters"]["before"] - stage["parameters"]["after"] == (len(old_vocab) - len(new_vocab)) * 32
    pieces = stage["pieces"]
    assert pieces["texts"] == 64 and 0 < pieces["changed_pieces"] <= pieces["pieces_after"]
    assert pieces["pieces_after"] > pieces["pieces_before"]  # dropped words split into more pieces
    assert stage["validation_before"] == validate(model_dir, small_data)
    assert stage["validation"] == validate(pruned, small_data)


def test_an_unseen_word_is_spelled_with_kept_pieces_not_unk(pruned, model_dir):
    assert tokens(model_dir, UNSEEN) == [UNSEEN]
    pieces = tokens(pruned, UNSEEN)
    assert "[UNK]" not in pieces and len(pieces) > 1
    assert "".join(p.removeprefix("##") for p in pieces) == UNSEEN
    old, new = (Tokenizer.from_file(str(d / "tokenizer.json")) for d in (model_dir, pruned))
    counts = changed_pieces(old, new, [f"the film {UNSEEN}", "the film"])
    assert counts == {"texts": 2, "pieces_before": 5, "pieces_after": 4 + len(pieces), "changed_pieces": len(pieces),
                      "changed_rate": len(pieces) / 5}


def test_the_pruned_model_loads_exports_and_serves_the_same_labels(pruned, model_dir, small_data, tmp_path):
    bundles = {}
    for name, source in (("pruned", pruned), ("unpruned", model_dir)):
        bundles[name] = export(ExportConfig(model=str(source), output=str(tmp_path / name), data=small_data,
                                            quantize="dynamic", optimize=False))
    assert max(read_manifest(bundles["pruned"])["metrics"]["parity_max_abs_diff"].values()) <= 1e-4
    texts = KEPT_TEXT + CORPUS
    labels = {name: [r["label"] for r in runtime.load(bundle)(texts)] for name, bundle in bundles.items()}
    assert labels["pruned"] == labels["unpruned"] and len(set(labels["pruned"])) == 2
    from optimum.onnxruntime import ORTModelForSequenceClassification  # Optimum reads the bundle as it is

    optimum = ORTModelForSequenceClassification.from_pretrained(bundles["pruned"])
    encoded = AutoTokenizer.from_pretrained(str(bundles["pruned"]))(texts, padding=True, return_tensors="pt")
    served = runtime.load(bundles["pruned"], batch_size=1).logits(texts)
    torch.testing.assert_close(optimum(**encoded).logits, torch.from_numpy(served), rtol=0, atol=1e-5)


def test_tied_masked_lm_head_is_cut_with_the_embeddings(minilm_dir, small_data, tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=64)).eval()
    torch.nn.init.normal_(model.cls.predictions.bias)  # zeros at first: a bias cut in the wrong order would not show
    model.save_pretrained(tmp_path / "mlm")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    tokenizer.save_pretrained(tmp_path / "mlm")
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS), encoding="utf-8")
    out = prune_vocabulary(VocabularyConfig(model=str(tmp_path / "mlm"), output_dir=str(tmp_path / "pruned"),
                                            data=small_data, corpus=str(tmp_path / "corpus.txt")))
    pruned = BertForMaskedLM.from_pretrained(out).eval()
    new_tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert pruned.cls.predictions.decoder.weight is pruned.get_input_embeddings().weight
    new_vocab = new_tokenizer.get_vocab()
    keep = [tokenizer.convert_tokens_to_ids(t) for t in sorted(new_vocab, key=new_vocab.get)]
    assert pruned.cls.predictions.bias.shape == (len(keep),) == (pruned.config.vocab_size,)
    with torch.inference_mode():
        expected = model(**tokenizer(KEPT_TEXT[0], return_tensors="pt")).logits[..., keep]
        torch.testing.assert_close(pruned(**new_tokenizer(KEPT_TEXT[0], return_tensors="pt")).logits, expected,
                                   atol=1e-5, rtol=1e-5)
    stage = json.loads((out / STAGE_FILE).read_text())
    assert stage["pieces"]["changed_pieces"] > 0 and "validation" not in stage  # no task head: no metrics


def test_a_keep_list_without_a_special_token_is_refused(model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    keep = kept_ids(json.loads(tokenizer.backend_tokenizer.to_str()), CORPUS)
    keep.remove(tokenizer.cls_token_id)
    with pytest.raises(TinyshipError, match=r"leave out the special token\(s\) \[CLS\]: keep every special token"):
        slice_vocabulary(model, tokenizer, keep)
    assert model.get_input_embeddings().num_embeddings == 30522  # refused before anything was cut


def copy_model(source, target, tokenizer=None):
    shutil.copytree(source, target)
    if tokenizer is None:
        (target / "tokenizer.json").unlink()
    else:
        tokenizer.save(str(target / "tokenizer.json"))
    return target


@pytest.mark.parametrize("case, message", [
    ("bpe", "tokenizer is BPE: vocabulary pruning supports only WordPiece"),
    ("unigram", "tokenizer is Unigram: vocabulary pruning supports only WordPiece"),
    ("no tokenizer", "has no tokenizer.json"),
    ("empty corpus", "holds no text: give a file with one document per line"),
    ("missing corpus", "no corpus file at"),
])
def test_bad_input_is_refused_clearly(case, message, model_dir, tmp_path):
    source, corpus = model_dir, None
    if case == "bpe":
        source = copy_model(model_dir, tmp_path / "m", Tokenizer(models.BPE({"a": 0, "[UNK]": 1}, [])))
    elif case == "unigram":
        source = copy_model(model_dir, tmp_path / "m", Tokenizer(models.Unigram([("a", -1.0), ("<unk>", -2.0)], 1)))
    elif case == "no tokenizer":
        source = copy_model(model_dir, tmp_path / "m")
    elif case == "empty corpus":
        (tmp_path / "corpus.txt").write_text("\n  \n", encoding="utf-8")
        corpus = str(tmp_path / "corpus.txt")
    else:
        corpus = str(tmp_path / "absent.txt")
    with pytest.raises(TinyshipError, match=message):
        prune_vocabulary(VocabularyConfig(model=str(source), output_dir=str(tmp_path / "out"), corpus=corpus))
    assert not (tmp_path / "out").exists()


def test_prune_vocabulary_from_the_command_line(model_dir, small_data, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    out = tmp_path / "pruned"
    assert main(["prune", str(model_dir), "--vocabulary", "--corpus", str(corpus), "--out", str(out),
                 "--limit", "64"]) == 0
    kept = json.loads((out / STAGE_FILE).read_text())["vocabulary"]["kept"]
    printed = capsys.readouterr().out
    assert f"kept {kept} of 30522 word pieces" in printed and "on validation, before: accuracy 0." in printed
    torch.testing.assert_close(logits(out, KEPT_TEXT), logits(model_dir, KEPT_TEXT), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--corpus", "c.txt"], "--corpus chooses the pieces --vocabulary keeps: add --vocabulary"),
    (["--vocabulary", "--flops", "0.5"], "--vocabulary prunes the vocabulary alone"),
])
def test_prune_vocabulary_flags_that_do_not_fit_are_refused(flags, message, model_dir, tmp_path, capsys):
    assert main(["prune", str(model_dir), "--out", str(tmp_path / "out"), *flags]) == 2
    assert f"tinyship prune: error: {message}" in capsys.readouterr().err and not (tmp_path / "out").exists()
