"""Bad `tinyship` invocations: each fails with a non-zero exit code (2 for a usage or input error), one message on
stderr that names the problem, and no traceback. Most run in-process; those where real bytes, pipes or closed
streams matter run the installed command."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tinyship.runtime.cli import main

TINYSHIP = Path(sys.executable).parent / "tinyship"
B = "{bundle}"

# (argv with {bundle}, {tmp} and {port} placeholders; stdin bytes or None; exit code; text stderr must hold)
CASES = {
    "no command": ([], None, 2, "the following arguments are required: COMMAND"),
    "unknown command": (["frobnicate"], None, 2, "invalid choice: 'frobnicate'"),
    "unknown flag": (["predict", B, "x", "--colour"], None, 2, "unrecognized arguments: --colour"),
    "missing bundle": (["predict", "{tmp}/missing", "x"], None, 2, "no bundle at"),
    "bundle path is a file": (["predict", B + "/tinyship.json", "x"], None, 2, "no bundle at"),
    "directory that is no bundle": (["predict", "{tmp}", "x"], None, 2, "is not a tinyship bundle"),
    "no texts, empty stdin": (["predict", B], b"", 2, "no texts: pass them as arguments or one per line on stdin"),
    "no texts, blank stdin": (["predict", B], b"\n  \n\n", 2, "no texts"),
    "Latin-1 stdin": (["predict", B], "café\n".encode("latin-1"), 2, "stdin is not UTF-8 text (at byte 4)"),
    "UTF-16 stdin": (["predict", B], "good\nbad\n".encode("utf-16"), 2, "stdin is UTF-16"),
    "UTF-16 stdin without a BOM": (["predict", B], "good\n".encode("utf-16-le"), 2, "iconv -f UTF-16 -t UTF-8"),
    "non-UTF-8 text argument": (["predict", B, "fine", "caf\udce9"], None, 2, "text 2 is not UTF-8 text"),
    "non-UTF-8 question": (["predict", B, "x", "--question", "\udcff?"], None, 2, "--question is not UTF-8 text"),
    "--question with a classifier": (["predict", B, "x", "--question", "who?"], None, 2,
                                     "--question is for question-answering bundles"),
    "--top-k 0": (["predict", B, "x", "--top-k", "0"], None, 2, "argument --top-k: 0 is out of range: give 1 or more"),
    "--top-k -3": (["predict", B, "x", "--top-k", "-3"], None, 2, "-3 is out of range: give 1 or more"),
    "--top-k abc": (["predict", B, "x", "--top-k", "abc"], None, 2, "'abc' is not a whole number"),
    "--threads -1": (["predict", B, "x", "--threads", "-1"], None, 2, "argument --threads: -1 is out of range"),
    "--threads 100000": (["predict", B, "x", "--threads", "100000"], None, 2, "100000 is out of range: give 1 to"),
    "--threads 1.5": (["predict", B, "x", "--threads", "1.5"], None, 2, "'1.5' is not a whole number"),
    "bench --repeat 0": (["bench", B, "--repeat", "0"], None, 2, "argument --repeat: 0 is out of range"),
    "bench --lengths 0": (["bench", B, "--lengths", "16,0"], None, 2, "argument --lengths: 0 is out of range"),
    "bench --batch-sizes x": (["bench", B, "--batch-sizes", "1,x"], None, 2, "'x' is not a whole number"),
    "bench --threads 0": (["bench", B, "--threads", "all,0"], None, 2, "argument --threads: 0 is out of range"),
    "export --max-length 2": (["export", "{tmp}", "--max-length", "2"], None, 2, "2 is out of range: give 8 or more"),
    "serve --port 99999": (["serve", B, "--port", "99999"], None, 2, "argument --port: 99999 is out of range: give 1 "
                           "to 65535"),
    "serve --port -1": (["serve", B, "--port", "-1"], None, 2, "-1 is out of range: give 1 to 65535"),
    "serve --max-batch 0": (["serve", B, "--max-batch", "0"], None, 2, "argument --max-batch: 0 is out of range"),
    "serve --max-wait-ms -1": (["serve", B, "--max-wait-ms", "-1"], None, 2, "give 0 or more"),
    "serve --request-timeout 0": (["serve", B, "--request-timeout", "0"], None, 2, "give 0.1 or more"),
    "serve --body-timeout inf": (["serve", B, "--body-timeout", "inf"], None, 2, "inf is out of range"),
    "serve --allowed-host URL": (["serve", B, "--allowed-host", "https://a.example"], None, 2, "is not a host name"),
    "serve, two bundles, one name": (["serve", B, B], None, 2, "two bundles are named"),
    "serve --api-key-file missing": (["serve", B, "--api-key-file", "{tmp}/none"], None, 2,
                                     "cannot read --api-key-file"),
    "serve --api-key-file empty": (["serve", B, "--api-key-file", "{tmp}/empty"], None, 2, "is empty: write the key"),
    "serve --api-key-file of two lines": (["serve", B, "--api-key-file", "{tmp}/two-lines"], None, 2,
                                          "must be one line of printable ASCII"),
    "serve --host 0.0.0.0 without a key": (["serve", B, "--host", "0.0.0.0", "--port", "{port}"], None, 2,
                                           "no API key guards it: give a key with --api-key-file FILE"),
}
# the installed command, fed real bytes: argv and stdin as a shell passes them ("closed": started without a stdin)
SUBPROCESS_CASES = {
    "Latin-1 stdin": (["predict", B], "café\n".encode("latin-1"), 2, "stdin is not UTF-8 text (at byte 4): convert "
                      "it, e.g. with iconv -f LATIN1 -t UTF-8"),
    "UTF-16 stdin": (["predict", B], "good\n".encode("utf-16"), 2, "stdin is UTF-16 (or binary), not UTF-8 text: "
                     "convert it with iconv -f UTF-16 -t UTF-8"),
    "non-UTF-8 argv": (["predict", B, "fine", "caf\udce9"], None, 2, "text 2 is not UTF-8 text: convert it, e.g. with "
                       "iconv -f LATIN1 -t UTF-8"),
    "closed stdin": (["predict", B], "closed", 2, "no texts"),
    "--top-k 0": (["predict", B, "--top-k", "0"], None, 2, "give 1 or more"),
}


@pytest.fixture
def places(fp32_bundle, tmp_path):
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "two-lines").write_text("key\nmore\n")
    with socket.socket() as probe:  # a port free to listen on, so only the missing key is wrong
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return {"bundle": str(fp32_bundle), "tmp": str(tmp_path), "port": str(port)}


@pytest.fixture(autouse=True)
def no_server(monkeypatch):
    """A serve case that wrongly starts the server fails here instead of serving forever."""
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)  # what uvicorn.run runs too


def in_process(argv, stdin, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin or b"")))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, stdin, code, message", CASES.values(), ids=CASES.keys())
def test_bad_invocation(argv, stdin, code, message, places, monkeypatch, capsys):
    got, err = in_process([arg.format(**places) for arg in argv], stdin, monkeypatch, capsys)
    assert got == code and one_message(err, message), err


def one_message(err: str, message: str) -> bool:
    """stderr is one line `tinyship ...: error: ...` holding message, after argparse's usage lines if any."""
    *usage, last = err.splitlines() or [""]
    return message in last and last.startswith("tinyship") and all(line.startswith(("usage: ", " ")) for line in usage)


@pytest.mark.parametrize("argv, stdin, code, message", SUBPROCESS_CASES.values(), ids=SUBPROCESS_CASES.keys())
def test_bad_invocation_of_the_installed_command(argv, stdin, code, message, places):
    argv = [TINYSHIP, *(os.fsencode(arg.format(**places)) for arg in argv)]  # fsencode: back to the bytes given
    if stdin == "closed":
        out = subprocess.run(["sh", "-c", 'exec "$0" "$@" <&-', *argv], capture_output=True)
    else:
        out = subprocess.run(argv, input=stdin, stdin=None if stdin else subprocess.DEVNULL, capture_output=True)
    err = out.stderr.decode()
    assert (out.returncode, out.stdout) == (code, b"") and one_message(err, message), err


def test_an_unresolvable_host_is_an_error_not_a_traceback(places, monkeypatch, capsys):
    code, err = in_process(["serve", places["bundle"], "--host", "256.1.1.1"], None, monkeypatch, capsys)
    assert code == 2 and err.startswith("tinyship serve: error: cannot listen on 256.1.1.1:8000 (")
    assert err.endswith("): choose another --host\n") and err.count("\n") == 1, err
