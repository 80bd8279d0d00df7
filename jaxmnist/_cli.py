"""What the command lines share: one-line usage errors, flag types, and library errors as flags."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from jaxmnist.config import MAX_SEED
from jaxmnist.errors import JaxmnistError

MAX_SEEDS = 4096  # a typo's bound: each seed holds its own model and optimizer state


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as `PREFIX: error: MESSAGE (see --help)`, not usage + message; exit 2.

    Subcommand parsers made from it inherit the prefix.
    """

    def __init__(self, *args, prefix: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", lambda **kw: OneLineParser(prefix=self.prefix, **kw))
        return super().add_subparsers(**kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prefix}: error: {message} (see --help)\n")


def path(text: str) -> str:
    """An argparse type for paths: an empty value is most likely an unset shell variable, and must
    not quietly mean "here" or "the default"."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def integer(text: str) -> int:
    """An argparse type for plain decimal integers (int() alone would also take '1_0' and
    non-ASCII digits); the library's `validate` checks the range and names the flag."""
    if not re.fullmatch(r"\s*\+?[0-9]+\s*", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def device_count(text: str) -> int | str:
    """An argparse type for a device count: a positive integer, or "all"."""
    if text == "all":
        return text
    count = integer(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or all, got {text!r}")
    return count


def seed_list(text: str) -> tuple[int, ...]:
    """An argparse type for several seeds: "0-9" -> 0..9, "0,3,7", or a mix ("0-3,7")."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part, re.ASCII)
        if not match:
            raise argparse.ArgumentTypeError(f"expected seeds like 0-9 or 0,3,7, got {text!r}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first or last > MAX_SEED or last - first >= MAX_SEEDS:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not a range of seeds from 0 to {MAX_SEED}"
            )
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds) or len(seeds) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"name each seed once, at most {MAX_SEEDS}: {text!r}")
    return tuple(seeds)


def number(text: str) -> float:
    """An argparse type for a decimal number; the library checks its range."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def as_flags(message: str) -> str:
    """A library message with its backticked argument names shown as flags:
    "`batch_size` 200 is ..." -> "--batch-size 200 is ..."."""
    return re.sub(r"`([a-z_]+)`", lambda name: "--" + name[1].replace("_", "-"), message)


def run_main(prefix: str, body: Callable[[], int]) -> int:
    """Runs a command line's `body`; every failure it raises ends as one line and an exit status:
    the error's own (2 usage, 1 the rest), 130 for a second Ctrl-C, 1 for a closed stdout."""
    try:
        return body()
    except JaxmnistError as error:
        print(f"{prefix}: error: {as_flags(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"\n{prefix}: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout went away (`| head`): nobody is left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
