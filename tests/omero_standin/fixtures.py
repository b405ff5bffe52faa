"""pytest fixtures for the OMERO stand-in; import them into a test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.omero_standin import Standin, make_standin


@pytest.fixture
def standin(tmp_path: Path) -> Standin:
    return make_standin(tmp_path / "omero")
