"""How the tree reads to a newcomer (issue 14): every doctest runs in a bare ``pytest`` (what
``make test`` runs), every package's ``__init__`` says what the package is for, and the agent
SDK's modules stay short."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("foresight", "schemas", "producers", "streams", "consumers", "agents", "origin")
#: Not a package, but its examples (bench/e2e.py's ``deal``) are doctests too.
DOCTEST_DIRS = (*PACKAGES, "bench")


def pytest_options() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        options: dict[str, object] = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    return options


def modules_with_examples() -> list[Path]:
    return sorted(
        path.relative_to(REPO)
        for folder in DOCTEST_DIRS
        for path in (REPO / folder).rglob("*.py")
        if ">>> " in path.read_text()
    )


def test_the_tree_has_doctests() -> None:
    assert len(modules_with_examples()) >= 20


def test_a_bare_pytest_runs_every_doctest() -> None:
    options = pytest_options()
    addopts = options["addopts"]
    testpaths = options["testpaths"]
    assert isinstance(addopts, list)
    assert isinstance(testpaths, list)
    assert "--doctest-modules" in addopts
    assert addopts[addopts.index("-m") : addopts.index("-m") + 2] == ["-m", "not replicated"]
    missed = [str(m) for m in modules_with_examples() if m.parts[0] not in testpaths]
    assert not missed, f"doctests no bare pytest collects: {missed}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_package_says_what_it_is_for(package: str) -> None:
    init = REPO / package / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert "placeholder" not in docstring.lower()
    assert len(docstring.split()) >= 12, f"{init}: {docstring!r}"


@pytest.mark.parametrize("module", sorted((REPO / "agents").glob("*.py")), ids=lambda p: p.name)
def test_agent_modules_are_short_and_say_their_job(module: Path) -> None:
    assert len(module.read_text().splitlines()) <= 400
    assert ast.get_docstring(ast.parse(module.read_text()))
