import json
import subprocess
import sys

from tinyship.runtime.cli import main


def test_predict_prints_labels_and_probabilities(fp32_bundle, capsys):
    assert main(["predict", str(fp32_bundle), "a fine film", "a dull film", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["a fine film", "a dull film"]
    assert all(line["label"] in ("negative", "positive") for line in lines)


def test_predict_reads_stdin_and_never_loads_torch(fp32_bundle):
    code = (
        "import sys; from tinyship.runtime.cli import main; rc = main(['predict', sys.argv[1], '--top-k', '2']);"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(fp32_bundle)], input="great\nawful\n", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("great") and "negative" in lines[0] and "positive" in lines[0]


def test_bad_bundle_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing"), "text"]) == 2
    err = capsys.readouterr().err
    assert "tinyship predict: error: no bundle at" in err and "Traceback" not in err


def test_missing_extra_names_the_extra_to_install():
    # block torch the way a base install lacks it, then ask for a stage that needs it
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, *a):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'): raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from tinyship.runtime.cli import main\n"
        "sys.exit(main(['distill', '--teacher', 'x']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert "tinyship distill needs the [compress] extra" in out.stderr and "pip install 'tinyship[compress]'" in out.stderr
