import argparse
import re
from dataclasses import dataclass, field

import pytest

from tinyship.runtime.flags import POSITIVE, add_flags, flag, flagged, number


def test_numbers_are_checked_against_their_range():
    assert number(1, 65535)("8000") == 8000 and number(0, kind=float)("2.5") == 2.5
    for text, message in (("0", "0 is out of range: give 1 to 65535"), ("x", "'x' is not a whole number"),
                          ("80.5", "'80.5' is not a whole number"), ("70000", "give 1 to 65535")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            number(1, 65535)(text)
    for text in ("nan", "inf", "-0.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"{text} is out of range: give 0 or more")):
            number(0, kind=float)(text)


@dataclass
class Base:
    out: str = field(default="runs/base", metadata=flag("where it goes", "--out"))
    steps: int = field(default=3, metadata=flag("how many", type=POSITIVE))
    quiet: bool = field(default=False, metadata=flag("say less", action="store_true"))
    hidden: int = 7  # no flag


@dataclass
class Child(Base):
    out: str = "runs/child"  # a new default: the flag is still the base's
    model: str = field(default="", metadata=flag("the model", "model"))
    share: float | None = field(default=None, metadata=flag("a share (default: none)", type=number(0, 1, kind=float)))


def parser_of(config, **options) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_flags(parser, config, **options)
    return parser


def test_fields_become_flags_with_their_defaults_and_read_back():
    parser = parser_of(Child)
    help = parser.format_help()
    assert "where it goes (default: runs/child)" in help and "how many (default: 3)" in help
    assert "a share (default: none)" in help and "--hidden" not in help and "say less (default" not in help
    args = parser.parse_args(["m", "--steps", "5", "--quiet"])
    assert Child(**flagged(Child, args)) == Child(out="runs/child", steps=5, quiet=True, model="m")
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--steps", "0"])  # the flag's type checks the range


def test_optional_flags_are_absent_unless_given_and_prefixes_and_names_rename_them():
    parser = parser_of(Base, names={"steps": None, "out": "--where"}, prefix="base", optional=True)
    assert flagged(Base, parser.parse_args([]), "base") == {}
    args = parser.parse_args(["--base-steps", "2", "--where", "x"])
    assert flagged(Base, args, "base") == {"steps": 2, "out": "x"}
    assert flagged(Base, args, "base", names=["steps"]) == {"steps": 2}
