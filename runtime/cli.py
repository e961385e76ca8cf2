"""The `tinyship` command. Each stage registers a subcommand under the `tinyship.commands` entry points.

Command modules import only argparse-level code at the top, so `tinyship --help` and
`tinyship predict` work with the base install; a stage's heavy imports happen when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from functools import partial
from importlib.metadata import entry_points
from typing import Callable

from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        prog="tinyship",
        description="Compress fine-tuned Transformer models and ship them to CPUs and edge devices.",
        epilog="Run `tinyship COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    extras = {}
    for ep in sorted(entry_points(group="tinyship.commands"), key=lambda ep: ep.name):
        extras[ep.name] = ep.extras
        command: Command = ep.load()
        sub = commands.add_parser(ep.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
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


def optional_flag(parser, flag: str, help: str, **kwargs) -> None:
    """A flag that is absent from the parsed arguments unless given, so it overrides a config only when used."""
    parser.add_argument(flag, default=argparse.SUPPRESS, help=help, **kwargs)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose a data set: a built-in one, or the user's own files. Unset flags keep the config's value."""
    group = parser.add_argument_group("data (a built-in set, or your own CSV/TSV/JSONL files)")
    add = partial(optional_flag, group)
    d = DataConfig()
    add("--dataset", f"built-in set: rotten_tomatoes or imdb (default: {d.dataset})")
    add("--train-file", "your training file (.csv, .tsv or .jsonl); replaces --dataset")
    add("--validation-file", "default: a tenth of --train-file, chosen by text hash")
    add("--test-file", "default: the validation split")
    add("--text-column", f"default: {d.text_column}")
    add("--text-pair-column", "second text column, for sentence pairs")
    add("--label-column", f"default: {d.label_column}")
    add("--labels", "the label set in id order, comma-separated (default: sorted labels of the train file)",
        type=lambda text: tuple(text.split(",")))
    add("--max-length", f"tokens per example (default: {d.max_length})", type=int)
    add("--limit", "use at most this many examples per split (quick runs)", type=int)


def data_config_from_args(args: argparse.Namespace, base: DataConfig | None = None) -> DataConfig:
    """base (default: DataConfig()) with the data flags that were given."""
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    return dataclasses.replace(base or DataConfig(), **{k: v for k, v in vars(args).items() if k in fields})


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="a bundle directory (from `tinyship export` or `tinyship compress`)")
    parser.add_argument("texts", nargs="*", help="texts to classify or tag (contexts, with --question); none: read one "
                        "per line from stdin")
    parser.add_argument("--top-k", type=int, default=1, help="labels to show per text (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per text")
    parser.add_argument("--question", help="for a question-answering bundle: the question; the texts are contexts")


def _run_predict(args: argparse.Namespace) -> None:
    from tinyship.runtime import QuestionAnswerer, TextClassifier, load

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise TinyshipError("no texts: pass them as arguments or one per line on stdin")
    predict = load(args.bundle, threads=args.threads)
    if isinstance(predict, QuestionAnswerer):
        if not args.question:
            raise TinyshipError("a question-answering bundle needs --question; the texts are the contexts")
        results = predict([(args.question, text) for text in texts], top_k=args.top_k)
    elif args.question:
        raise TinyshipError("--question is for question-answering bundles")
    else:
        results = predict(texts, top_k=args.top_k) if isinstance(predict, TextClassifier) else predict(texts)
    for text, result in zip(texts, results):
        if args.json or not isinstance(predict, TextClassifier):
            print(json.dumps({"text": text, **result}))
        else:
            scores = "  ".join(f"{label} {p:.3f}" for label, p in result["scores"].items())
            print(f"{scores}  {text}")


def _configure_bench(parser: argparse.ArgumentParser) -> None:
    numbers = lambda text: tuple(int(n) for n in text.split(","))  # noqa: E731
    parser.add_argument("bundle", help="a bundle directory")
    parser.add_argument("--batch-sizes", type=numbers, default=(1, 8), help="comma-separated (default: 1,8)")
    parser.add_argument("--lengths", type=numbers, default=(16, 64, 128), help="input tokens, comma-separated "
                        "(default: 16,64,128)")
    parser.add_argument("--threads", type=lambda text: tuple(None if t == "all" else int(t) for t in text.split(",")),
                        default=(1, None), help="onnxruntime threads, comma-separated; all: every core (default: 1,all)")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs per setting (default: %(default)s)")
    parser.add_argument("--out", help="write bench.json and bench.md to this directory")


def _run_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tinyship.runtime.bench import bench, markdown
    from tinyship.runtime.files import write_text_atomic

    if args.repeat < 1 or min(args.batch_sizes + args.lengths) < 1:
        raise TinyshipError("--repeat, --batch-sizes and --lengths take positive numbers")
    report = bench(args.bundle, args.batch_sizes, args.lengths, args.threads, args.repeat)
    print(markdown(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "bench.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(out / "bench.md", markdown(report))
        print(f"written to {out / 'bench.json'} and {out / 'bench.md'}")


PREDICT = Command(
    help="classify or tag texts, or answer a question, with a bundle (base install only: no torch)",
    configure=_configure_predict,
    run=_run_predict,
)


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    from tinyship.runtime.server import ServeConfig

    d = ServeConfig()
    parser.add_argument("bundles", nargs="+", metavar="[NAME=]BUNDLE",
                        help="bundle directories to serve; NAME=DIR names one (default name: the directory's)")
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s (this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    parser.add_argument("--max-batch", type=int, default=d.max_batch, help="inputs per model run (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                        help="how long a request waits for others to share its run (default: %(default)s)")
    parser.add_argument("--max-inputs", type=int, default=d.max_inputs, help="inputs per request (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=d.max_chars, help="characters per text (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per model (default: all cores)")


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
    if min(args.max_batch, args.max_inputs, args.max_chars) < 1 or args.max_wait_ms < 0:
        raise TinyshipError("--max-batch, --max-inputs and --max-chars take positive numbers, --max-wait-ms 0 or more")
    config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_inputs=args.max_inputs,
                         max_chars=args.max_chars, threads=args.threads)
    serve(bundles, args.host, args.port, config)


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
