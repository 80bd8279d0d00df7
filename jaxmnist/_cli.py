"""What both command lines share: usage errors as one line, and path flags that refuse ''."""

from __future__ import annotations

import argparse


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
