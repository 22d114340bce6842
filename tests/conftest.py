"""Shared test fixtures: the settings the tests run under."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "yoochoose-100k"


@pytest.fixture(scope="session")
def yoochoose_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared dataset is missing at {SHARED_DATA}")
    return SHARED_DATA
