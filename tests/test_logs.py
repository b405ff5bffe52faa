"""logs/app.logs: rotation by size and count, order uuids on their lines, no passwords."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


from omero_adi import logs
from omero_adi.settings import build_settings


@contextmanager
def configured(path: Path, **values: Any) -> Iterator[None]:
    """logs.configure for one test; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure(build_settings({"log_file_path": str(path), **values}, {}))
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_log_file_rotates_and_order_lines_carry_the_uuid(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "app.logs"
    with configured(path, log_max_bytes=2000, log_backup_count=2):
        order = logs.order_log("1f2e3d4c-aaaa")
        for n in range(100):
            order.info("step %d", n)
        logging.getLogger("omero_adi.daemon").warning(
            "cannot reach postgresql://adi:s3cret@db:5432/biomero")
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["app.logs", "app.logs.1", "app.logs.2"]  # size limit and count kept
    assert all(path.stat().st_size <= 2000 for path in path.parent.iterdir())
    rotated = (path.parent / "app.logs.1").read_text()
    assert all("[1f2e3d4c-aaaa] step" in line for line in rotated.splitlines())
    last = path.read_text()
    assert "postgresql://adi:***@db:5432/biomero" in last and "s3cret" not in last
    assert "omero_adi.daemon [-]" in last  # lines outside an order say so


def test_log_lines_mask_passwords_that_hold_an_at_sign(tmp_path: Path) -> None:
    path = tmp_path / "app.logs"
    with configured(path):
        logging.getLogger("omero_adi.daemon").warning(
            "cannot reach postgresql://adi:p@ssw0rd@db/biomero")
    assert "ssw0rd" not in path.read_text()
