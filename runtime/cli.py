"""The `tinyship` command. Each stage registers a subcommand under the `tinyship.commands` entry points.

Command modules import only argparse-level code at the top, so `tinyship --help` and
`tinyship predict` work with the base install; a stage's heavy imports happen when it runs.
A stage's flags are declared on its config dataclass's fields (tinyship.runtime.flags) and checked at parse time,
so a bad value is a usage error, never a traceback.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import io
import json
import logging
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.flags import (
    PORT,
    POSITIVE,
    SECONDS,
    THREADS,
    THREADS_HELP,
    add_flags,
    comma_separated,
    flagged,
    number,
)

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what `cat` or `yes` report when the reader of their output leaves


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


class IntermixedParser(argparse.ArgumentParser):
    """A command's parser that takes options between positionals (`predict BUNDLE --top-k 2 TEXT`)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # parse_known_intermixed_args calls back here (before Python 3.13) for its two passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


class _CurrentStdout(logging.StreamHandler):
    """Writes to sys.stdout as it is when a message comes, so that redirections (and test captures) see it."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):
        pass


class _Lines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def configure_logging(verbosity: int = 0) -> None:
    """tinyship's messages (the "tinyship" loggers) to stdout, a line each: warnings and errors only at verbosity -1
    (-q), progress as well at 0, debugging detail at 1 (-v). The CLI and the benchmarks call it; a library user
    configures logging as they like."""
    logger = logging.getLogger("tinyship")
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(_Lines("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _verbosity_arguments() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    group = shared.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                       help="print warnings and errors only")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, help="print more detail")
    return shared


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        prog="tinyship",
        description="Compress fine-tuned Transformer models and ship them to CPUs and edge devices.",
        epilog="Run `tinyship COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=IntermixedParser)
    extras = {}
    for ep in sorted(entry_points(group="tinyship.commands"), key=lambda ep: ep.name):
        extras[ep.name] = ep.extras
        command: Command = ep.load()
        sub = commands.add_parser(ep.name, help=command.help, description=command.help,
                                  parents=[_verbosity_arguments()])
        command.configure(sub)
        sub.set_defaults(run=command.run)
    args = parser.parse_args(argv)
    configure_logging(args.verbosity)
    try:
        code = args.run(args) or 0
        sys.stdout.flush()  # so a reader that left shows here, not as an error at exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_left():
            raise  # another pipe broke: not the quiet `| head` case
        return _reader_left()
    except TinyshipError as e:
        print(f"tinyship {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if not extras[args.command] or (e.name or "").startswith("tinyship"):
            raise
        needed = ",".join(extras[args.command])
        print(
            f"tinyship {args.command} needs the [{needed}] extra (missing module {e.name!r}): "
            f"pip install 'tinyship[{needed}]'",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print(f"tinyship {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a file, a permission, a socket: the machine's state, not a bug, so one line
        print(f"tinyship {args.command}: error: {e}", file=sys.stderr)
        return 1


def _stdout_reader_left() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll says POLLERR); True where poll is missing."""
    import select

    if not hasattr(select, "poll"):
        return True
    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def _reader_left() -> int:
    """Stop quietly when the reader of stdout left (`tinyship predict ... | head`), as command-line tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout at exit: into /dev/null now, not the closed pipe
    return SIGPIPE_EXIT


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose a data set: a built-in one, or the user's own files. Unset flags keep the config's
    value."""
    add_flags(parser.add_argument_group("data (a built-in set, or your own CSV/TSV/JSONL files)"), DataConfig,
              optional=True)


def data_config_from_args(args: argparse.Namespace, base: DataConfig | None = None) -> DataConfig:
    """base (default: DataConfig()) with the data flags that were given."""
    return dataclasses.replace(base or DataConfig(), **flagged(DataConfig, args))


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="a bundle directory (from `tinyship export` or `tinyship compress`)")
    parser.add_argument("texts", nargs="*", default=[], help="texts to classify or tag (contexts, with --question); "
                        "none: read one per line from stdin (UTF-8)")
    parser.add_argument("--top-k", type=POSITIVE, default=1, help="labels (or answers) to show per text, 1 or more "
                        "(default: %(default)s)")
    parser.add_argument("--threads", type=THREADS, help=f"onnxruntime threads, {THREADS_HELP} (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per text")
    parser.add_argument("--question", help="for a question-answering bundle: the question; the texts are contexts")
    _model_format_argument(parser)


def _run_predict(args: argparse.Namespace) -> None:
    from tinyship.runtime import QuestionAnswerer, TextClassifier, load

    texts = [_utf8(text, f"text {i}") for i, text in enumerate(args.texts, 1)] or _stdin_texts()
    if not texts:
        raise TinyshipError("no texts: pass them as arguments or one per line on stdin")
    question = args.question and _utf8(args.question, "--question")
    predict = load(args.bundle, threads=args.threads, model_format=args.model_format)
    if isinstance(predict, QuestionAnswerer):
        if not question:
            raise TinyshipError("a question-answering bundle needs --question; the texts are the contexts")
        results = predict([(question, text) for text in texts], top_k=args.top_k)
    elif question:
        raise TinyshipError("--question is for question-answering bundles")
    else:
        results = predict(texts, top_k=args.top_k) if isinstance(predict, TextClassifier) else predict(texts)
    for text, result in zip(texts, results):
        if args.json or not isinstance(predict, TextClassifier):
            print(json.dumps({"text": text, **result}))
        else:
            scores = "  ".join(f"{label} {p:.3f}" for label, p in result["scores"].items())
            print(f"{scores}  {text}")


def _utf8(text: str, what: str) -> str:
    """text, unless it came from bytes that are not UTF-8 (Python keeps those as lone surrogates in sys.argv)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TinyshipError(f"{what} is not UTF-8 text: convert it, e.g. with iconv -f LATIN1 -t UTF-8") from None
    return text


def _stdin_texts() -> list[str]:
    """The non-blank lines of stdin (none if it is closed), read as UTF-8 with or without a BOM; other encodings
    are refused rather than misread."""
    if sys.stdin is None:
        return []
    data = sys.stdin.buffer.read()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in data:
        raise TinyshipError("stdin is UTF-16 (or binary), not UTF-8 text: convert it with iconv -f UTF-16 -t UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TinyshipError(f"stdin is not UTF-8 text (at byte {e.start + 1}): convert it, e.g. with "
                            "iconv -f LATIN1 -t UTF-8") from None
    return [line.rstrip("\n") for line in io.StringIO(text, newline=None) if line.strip()]


def _model_format_argument(parser: argparse.ArgumentParser) -> None:
    from tinyship.runtime.bundle import MODEL_FORMATS

    parser.add_argument("--model-format", choices=MODEL_FORMATS, default="onnx",
                        help="the model file to run: onnx, or ort (the ORT-format model `tinyship convert --target "
                             "mobile` adds, as onnxruntime's mobile packages run it) (default: %(default)s)")


def _configure_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="a bundle directory (with --profile: a probe pack)")
    parser.add_argument("--batch-sizes", type=comma_separated(POSITIVE), default=(1, 8),
                        help="comma-separated (default: 1,8)")
    parser.add_argument("--lengths", type=comma_separated(POSITIVE), default=(16, 64, 128),
                        help="input tokens, comma-separated (default: 16,64,128)")
    parser.add_argument("--threads", type=comma_separated(lambda text: None if text == "all" else THREADS(text)),
                        default=(1, None), help=f"onnxruntime threads, comma-separated: {THREADS_HELP}, or all: "
                        "every core (default: 1,all)")
    parser.add_argument("--repeat", type=POSITIVE, default=50, help="timed runs per setting (default: %(default)s)")
    parser.add_argument("--out", help="write bench.json and bench.md to this directory")
    parser.add_argument("--profile", metavar="FILE", help="time the probe pack given (`tinyship probes` writes one) "
                        "at --lengths and --threads and write this device's profile to FILE: the latency table and "
                        "the cost model `tinyship compress --device-profile` predicts students' latency with")
    _model_format_argument(parser)


def _run_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tinyship.runtime.bench import bench, markdown
    from tinyship.runtime.files import write_text_atomic

    if args.profile:
        return _run_profile(args)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)  # before measuring: an unusable --out fails at once
    report = bench(args.bundle, args.batch_sizes, args.lengths, args.threads, args.repeat, args.model_format)
    print(markdown(report))
    if out:
        write_text_atomic(out / "bench.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(out / "bench.md", markdown(report))
        print(f"written to {out / 'bench.json'} and {out / 'bench.md'}")


def _run_profile(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tinyship.runtime.files import write_text_atomic
    from tinyship.runtime.profile import markdown, profile

    out = Path(args.profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = profile(args.bundle, args.lengths, [t or os.cpu_count() for t in args.threads], args.repeat)
    write_text_atomic(out, json.dumps(report, indent=1) + "\n")
    write_text_atomic(out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    print(f"written to {out} and {out.with_suffix('.md')}")


PREDICT = Command(
    help="classify or tag texts, or answer a question, with a bundle (base install only: no torch)",
    configure=_configure_predict,
    run=_run_predict,
)


def _host_argument(text: str) -> str:
    """An argparse type: a name as clients put it in the Host header (no scheme, path or spaces)."""
    if not text or "/" in text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name: give one as in the Host header, "
                                         "e.g. api.example.com")
    return text


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    from tinyship.runtime.server import ServeConfig

    d = ServeConfig()
    parser.add_argument("bundles", nargs="+", metavar="[NAME=]BUNDLE",
                        help="bundle directories to serve; NAME=DIR names one (default name: the directory's)")
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s (this machine only)")
    parser.add_argument("--port", type=PORT, default=8000, help="1 to 65535 (default: %(default)s)")
    parser.add_argument("--max-batch", type=POSITIVE, default=d.max_batch,
                        help="inputs per model run (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=number(0, kind=float), default=d.max_wait_ms,
                        help="how long a request waits for others to share its run (default: %(default)s)")
    parser.add_argument("--max-inputs", type=POSITIVE, default=d.max_inputs,
                        help="inputs per request (default: %(default)s)")
    parser.add_argument("--max-chars", type=POSITIVE, default=d.max_chars,
                        help="characters per text (default: %(default)s)")
    parser.add_argument("--threads", type=THREADS, help=f"onnxruntime threads per model, {THREADS_HELP} "
                        "(default: all cores)")
    security = parser.add_argument_group("security")
    security.add_argument("--api-key-file", metavar="FILE", help="a file holding the API key that requests must "
                          "send (default: the TINYSHIP_API_KEY environment variable; neither: no key)")
    security.add_argument("--insecure", action="store_true", help="allow a --host other than this machine without "
                          "an API key")
    security.add_argument("--allowed-host", dest="allowed_hosts", metavar="NAME", action="append", type=_host_argument,
                          default=[], help="a Host header name to accept; repeat for more (default: any)")
    security.add_argument("--request-timeout", type=SECONDS, default=d.request_timeout_s, metavar="SECONDS",
                          help="the longest a request may take, 0.1 or more (default: %(default)s)")
    security.add_argument("--body-timeout", type=SECONDS, default=d.body_timeout_s, metavar="SECONDS",
                          help="the longest a client may take to send a request body, 0.1 or more "
                          "(default: %(default)s)")


def _run_serve(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tinyship.runtime.server import ServeConfig, serve

    bundles = {}
    for given in args.bundles:
        name, _, path = given.rpartition("=")
        name = name or Path(path).resolve().name
        if name in bundles:
            raise TinyshipError(f"two bundles are named {name!r}: name them, e.g. {name}2={path}")
        bundles[name] = path
    config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_inputs=args.max_inputs,
                         max_chars=args.max_chars, threads=args.threads, api_key=_api_key(args.api_key_file),
                         insecure=args.insecure, allowed_hosts=tuple(args.allowed_hosts),
                         request_timeout_s=args.request_timeout, body_timeout_s=args.body_timeout)
    serve(bundles, args.host, args.port, config)


def _api_key(path: str | None) -> str | None:
    """The key requests must send: the content of --api-key-file, stripped, else $TINYSHIP_API_KEY, else None."""
    from pathlib import Path

    if path is None:
        key, source = os.environ.get("TINYSHIP_API_KEY", "").strip(), "TINYSHIP_API_KEY"
        if not key:
            return None
    else:
        try:
            key, source = Path(path).read_bytes().decode("utf-8", "replace").strip(), path
        except OSError as e:
            raise TinyshipError(f"cannot read --api-key-file {path}: {e.strerror}") from None
        if not key:
            raise TinyshipError(f"--api-key-file {path} is empty: write the key into it")
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise TinyshipError(f"the API key in {source} must be one line of printable ASCII characters without spaces")
    return key


SERVE = Command(
    help="serve bundles over HTTP: POST /v1/predict, GET /healthz, GET /metrics, /docs ([serve] extra)",
    configure=_configure_serve,
    run=_run_serve,
)


BENCH = Command(
    help="measure a bundle on this device: cold start, memory, latency and throughput (base install only)",
    configure=_configure_bench,
    run=_run_bench,
)
