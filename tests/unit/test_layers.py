"""The import contract that `make lint` checks (pyproject's [tool.importlinter]): today's tree
keeps it, and a new arrow up the layers or between two stages, in a copy of the tree, breaks it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("foresight", "schemas", "producers", "streams", "consumers", "agents", "origin")
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the packages under ``root`` (first on sys.path there), with the
    contract in root's pyproject.toml; wide lines, so that no arrow is wrapped."""
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=root,
        env=os.environ | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages' modules and of pyproject.toml, to break."""
    for package in PACKAGES:
        for source in (REPO / package).rglob("*.py"):
            target = tmp_path / source.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    shutil.copyfile(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_todays_tree_keeps_the_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "new_import", "arrow"),
    [
        ("foresight/ring.py", "import streams.engine", "foresight.ring -> streams.engine"),
        ("foresight/settings.py", "import foresight.cli", "foresight.settings -> foresight.cli"),
        ("streams/engine.py", "import foresight.stack", "streams.engine -> foresight.stack"),
        ("schemas/records.py", "import foresight.ring", "schemas.records -> foresight.ring"),
        ("consumers/fetcher.py", "import producers.publisher", "consumers.fetcher -> producers"),
    ],
    ids=["kernel-to-stage", "kernel-to-cli", "stage-to-harness", "schemas-to-kernel", "stages"],
)
def test_a_new_arrow_breaks_the_contract(
    tree: Path, module: str, new_import: str, arrow: str
) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{new_import}\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert arrow in result.stdout
