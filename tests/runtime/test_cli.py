import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinyship.runtime import cli
from tinyship.runtime.cli import main
from tinyship.runtime.server import ServeConfig


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
    out = subprocess.run([sys.executable, "-c", code, str(fp32_bundle)], input="great\nawful\n", capture_output=True,
                         text=True)
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
        "        if name.split('.')[0] in ('torch', 'transformers'):"
        " raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from tinyship.runtime.cli import main\n"
        "sys.exit(main(['distill', '--teacher', 'x']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert ("tinyship distill needs the [compress] extra" in out.stderr
            and "pip install 'tinyship[compress]'" in out.stderr)


def test_a_utf8_bom_on_stdin_is_dropped(fp32_bundle, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\ufeffa fine film\r\na dull film\n".encode())))
    assert main(["predict", str(fp32_bundle), "--json"]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == ["a fine film", "a dull film"]


def test_a_reader_that_leaves_early_ends_the_command_quietly(fp32_bundle):
    """`tinyship predict ... | head -1`: the rest of the output has nowhere to go; exit 141 (128 + SIGPIPE), as `cat`
    does, with nothing on stderr."""
    command = [Path(sys.executable).parent / "tinyship", "predict", str(fp32_bundle)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        child.stdin.write(b"a film\n" * 5000)  # 5000 output lines overflow the pipe while no one reads them
        child.stdin.close()
        assert child.stdout.readline().endswith(b"a film\n")
        child.stdout.close()
        assert (child.wait(timeout=60), child.stderr.read()) == (141, b"")


def test_flags_may_come_between_the_texts(fp32_bundle, capsys):
    assert main(["predict", str(fp32_bundle), "--top-k", "2", "a fine film", "--json", "a dull film"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["a fine film", "a dull film"]
    assert all(sorted(line["scores"]) == ["negative", "positive"] for line in lines)


def test_os_errors_are_one_line_and_real_bugs_stay_visible(fp32_bundle, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    assert main(["bench", str(fp32_bundle), "--out", str(tmp_path / "file" / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyship bench: error: ") and "Not a directory" in err and err.count("\n") == 1, err

    import tinyship.runtime

    def load(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp32_bundle / "tinyship.json"))

    monkeypatch.setattr(tinyship.runtime, "load", load)
    assert main(["predict", str(fp32_bundle), "x"]) == 1
    assert capsys.readouterr().err == f"tinyship predict: error: [Errno 13] Permission denied: " \
                                      f"'{fp32_bundle / 'tinyship.json'}'\n"
    monkeypatch.setattr(tinyship.runtime, "load", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["predict", str(fp32_bundle), "x"])


def serve_config(argv, monkeypatch):
    """The ServeConfig `tinyship serve` would run with, and its host and port."""
    import tinyship.runtime.server

    served = []
    monkeypatch.setattr(tinyship.runtime.server, "serve", lambda *args: served.append(args))
    assert main(["serve", *argv]) == 0
    [(bundles, host, port, config)] = served
    return host, port, config


def test_serve_flags_reach_the_server_config(fp32_bundle, tmp_path, monkeypatch):
    (tmp_path / "key").write_text("  s3cret-key\n")
    monkeypatch.setenv("TINYSHIP_API_KEY", "from-the-environment")
    flags = ["--host", "0.0.0.0", "--port", "9000", "--api-key-file", str(tmp_path / "key"), "--allowed-host",
             "a.example", "--allowed-host", "b.example:9000", "--request-timeout", "5", "--body-timeout", "2.5"]
    host, port, config = serve_config([str(fp32_bundle), *flags], monkeypatch)
    assert (host, port, config.api_key, config.insecure) == ("0.0.0.0", 9000, "s3cret-key", False)
    assert config.allowed_hosts == ("a.example", "b.example:9000")
    assert (config.request_timeout_s, config.body_timeout_s) == (5.0, 2.5)
    assert serve_config([str(fp32_bundle)], monkeypatch)[2].api_key == "from-the-environment"
    monkeypatch.delenv("TINYSHIP_API_KEY")
    host, port, config = serve_config([str(fp32_bundle), "--insecure"], monkeypatch)
    assert (host, port, config.api_key, config.insecure, config.allowed_hosts) == ("127.0.0.1", 8000, None, True, ())
    assert config == dataclasses.replace(ServeConfig(), insecure=True)  # the flags' defaults are the server's


def test_a_broken_pipe_other_than_stdout_is_not_taken_for_a_reader_that_left(monkeypatch):
    def broken(args):
        raise BrokenPipeError("a socket the command wrote to")

    monkeypatch.setattr(cli, "PREDICT", dataclasses.replace(cli.PREDICT, run=broken))
    with pytest.raises(BrokenPipeError):
        main(["predict", "bundle", "text"])
