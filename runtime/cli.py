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
    parser.add_argument("texts", nargs="*", help="texts to classify; none: read one text per line from stdin")
    parser.add_argument("--top-k", type=int, default=1, help="labels to show per text (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per text")


def _run_predict(args: argparse.Namespace) -> None:
    from tinyship.runtime import load

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise TinyshipError("no texts: pass them as arguments or one per line on stdin")
    classify = load(args.bundle, threads=args.threads)
    for text, result in zip(texts, classify(texts, top_k=args.top_k)):
        if args.json:
            print(json.dumps({"text": text, **result}))
        else:
            scores = "  ".join(f"{label} {p:.3f}" for label, p in result["scores"].items())
            print(f"{scores}  {text}")


PREDICT = Command(
    help="classify texts with a bundle (base install only: no torch)",
    configure=_configure_predict,
    run=_run_predict,
)
