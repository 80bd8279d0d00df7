"""The installed package, seen from outside the repository as a user's script sees it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = "import jaxmnist; print(jaxmnist.__file__); print(jaxmnist.train_and_evaluate.__module__)"


def test_the_installed_package_is_a_regular_package_from_any_directory(tmp_path):
    # An editable install once registered `jaxmnist` as a namespace package: from any directory but
    # the repository's root, `import jaxmnist` then found no __init__.py and none of its exports.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    if "ModuleNotFoundError" in result.stderr:
        pytest.skip("jaxmnist is not installed in this environment (pip install -e .)")
    assert result.returncode == 0, result.stderr
    init_file, module = result.stdout.split()
    assert init_file != "None", "jaxmnist imported as a namespace package"
    here = Path(__file__).resolve().parents[1] / "jaxmnist" / "__init__.py"
    if Path(init_file).resolve() != here:
        pytest.skip(f"the installed jaxmnist is another checkout's ({init_file})")
    assert module == "jaxmnist.runner"
