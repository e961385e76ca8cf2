"""Command-line flags, declared once on the config dataclasses' fields: `field(default=..., metadata=flag(help))`.

add_flags() turns a config's flagged fields into argparse options (their defaults, read from the config, join the
help); flagged() reads the given ones back as the config's field values. Numeric types check values at parse time,
so a bad value is a usage error that says the accepted range, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Callable

MAX_THREADS = 4 * (os.cpu_count() or 1)  # catches typos like 100000, on which onnxruntime hangs starting threads
FLAG = "flag"  # the field metadata key


def number(low: float, high: float | None = None, kind: type = int) -> Callable[[str], float]:
    """An argparse type: a finite `kind` (int or float) from low to high (None: no limit); the error says the range."""
    accepted = f"{low} to {high}" if high is not None else f"{low} or more"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}: give {accepted}") from None
        if not (low <= value < math.inf and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {accepted}")
        return value

    return parse


def comma_separated(item: Callable[[str], object]) -> Callable[[str], tuple]:
    """An argparse type: a comma-separated list, each part parsed by item."""
    return lambda text: tuple(item(part) for part in text.split(","))


POSITIVE = number(1)
SHARE = number(0, 1, kind=float)  # a share: of heads to remove, of words to replace
AMOUNT = number(1e-6, kind=float)  # a positive amount: epochs, a learning rate, a temperature
THREADS = number(1, MAX_THREADS)
THREADS_HELP = f"1 to {MAX_THREADS} (4 per core)"
SECONDS = number(0.1, kind=float)
PORT = number(1, 65535)


def flag(help: str, name: str | None = None, **options) -> dict:
    """Field metadata that makes the field a flag: its help, its name (default --field-name; a name without dashes
    is a positional argument) and argparse options (type, choices, metavar, action). A help that names its default
    (say, what None means) is kept as it is; otherwise the field's default is added."""
    return {FLAG: {"help": help, "name": name, **options}}


def add_flags(parser, config: type, names=None, prefix: str = "", optional: bool = False) -> None:
    """The flags of config's fields: those named (a list, or a dict of field -> the flag's name here, None for the
    usual one), else every flagged field, in declaration order. prefix "prune" makes --flops --prune-flops (and
    the dest prune_flops). optional: a flag not given is absent from the parsed arguments, so that it overrides a
    base config (a recipe's) only when used."""
    renamed = names if isinstance(names, dict) else {}
    for field in dataclasses.fields(config):
        spec = _spec(config, field.name)
        if spec is None or (names is not None and field.name not in names):
            continue
        options = {k: v for k, v in spec.items() if k not in ("help", "name")}
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        help = _help(spec["help"], default, options)
        name = spec["name"] or f"--{field.name.replace('_', '-')}"
        if not name.startswith("-"):
            parser.add_argument(name, help=help, **options)
            continue
        if prefix:
            name = f"--{prefix}-{name.removeprefix('--')}"
        name = renamed.get(field.name) or name
        if "action" not in options and "choices" not in options:
            options.setdefault("metavar", name.removeprefix("--").replace("-", "_").upper())
        parser.add_argument(name, dest=_dest(field.name, prefix), help=help,
                            default=argparse.SUPPRESS if optional else default, **options)


def flagged(config: type, args: argparse.Namespace, prefix: str = "", names=None) -> dict:
    """The values of config's flags (those named, else all) that args holds (all that were added, unless they were
    added as optional), by field name."""
    given = vars(args)
    return {f.name: given[_dest(f.name, prefix)] for f in dataclasses.fields(config)
            if (names is None or f.name in names) and _spec(config, f.name) and _dest(f.name, prefix) in given}


def _help(text: str, default, options: dict) -> str:
    """A flag's help, with its default unless the text says it already or the flag is a switch."""
    shown_anything = default not in (None, "", ())
    if "default" not in text and shown_anything and options.get("action") not in ("store_true", "store_false"):
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        text = f"{text} (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help with %


def _spec(config: type, name: str) -> dict | None:
    """The flag of config's field `name`, declared there or on a base class (a subclass that changes a field's
    default redeclares the field, not its flag)."""
    for cls in config.__mro__:
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if name in fields and FLAG in fields[name].metadata:
            return fields[name].metadata[FLAG]
    return None


def _dest(field: str, prefix: str) -> str:
    return f"{prefix}_{field}" if prefix else field
