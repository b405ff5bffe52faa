"""PostgreSQL restarted under load: every order still runs exactly once.

This restarts the local PostgreSQL server (``pg_ctlcluster … restart``), so it
needs that server and the right to restart it, as on the CI machine. Elsewhere
it skips, unless ``ADI_REQUIRE_PG_RESTART=1`` (set by scripts/test when the
tests use the local server) makes a missing cluster a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_STARTED
from omero_adi.store.retry import retry_transient
from tests.helpers import insert_order, wait_for
from tests.test_daemon_processes import Daemons, _count, setup  # noqa: F401  (fixture)

ORDERS = 120


def _cannot_restart(reason: str) -> NoReturn:
    if os.environ.get("ADI_REQUIRE_PG_RESTART") == "1":
        pytest.fail(f"ADI_REQUIRE_PG_RESTART=1 but {reason}")
    pytest.skip(reason)


def _restart_command(admin_url: str) -> list[str]:
    """pg_ctlcluster for the cluster that serves ``admin_url`` (matched by port)."""
    url = make_url(admin_url)
    clusters = shutil.which("pg_lsclusters")
    if url.host not in ("127.0.0.1", "localhost") or clusters is None:
        _cannot_restart(f"restarting PostgreSQL at {url.host}:{url.port} needs a local "
                        "server and pg_lsclusters/pg_ctlcluster")
    listing = subprocess.run(
        [clusters, "--no-header"], capture_output=True, text=True, check=True
    ).stdout
    port = str(url.port or 5432)
    for line in listing.splitlines():
        version, name, cluster_port = line.split()[:3]
        if cluster_port == port:
            return ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"]
    _cannot_restart(f"no local PostgreSQL cluster listens on port {port} (pg_lsclusters)")


def test_orders_survive_a_postgresql_restart(setup, pg_admin_url) -> None:  # noqa: F811
    engine, base, daemons = setup
    restart = _restart_command(pg_admin_url)
    for _ in range(2):
        daemons.start("--workers", "2", "--poll", "2")
    inserted: list[str] = []
    restarted = threading.Event()

    def client() -> None:
        """A script inserting orders throughout, retrying as a careful client would."""
        for n in range(ORDERS):
            uuid = f"restart-{n:03d}"
            retry_transient(lambda: insert_order(engine, uuid, [str(base / "image.tif")]),
                            attempts=None, max_delay=1.0)
            inserted.append(uuid)
            if n == ORDERS // 3:
                restarted.wait(60)

    writer = threading.Thread(target=client)
    writer.start()
    wait_for(lambda: len(inserted) > ORDERS // 3 and _count(engine, STAGE_IMPORTED) > 10,
             what="the daemons working before the restart")
    subprocess.run(restart, check=True, timeout=120)
    restarted.set()
    writer.join(timeout=300)
    assert len(inserted) == ORDERS

    def all_done() -> bool:
        try:
            return _count(engine, STAGE_IMPORTED) == ORDERS
        except sa.exc.OperationalError:
            return False

    wait_for(all_done, timeout=180, what="every order after the restart")
    assert _count(engine, STAGE_INGEST_STARTED) == ORDERS
    runs = daemons.runs()
    assert set(runs) == set(inserted) and max(runs.values()) == 1
    assert Path(base / "image.tif").read_bytes() == b"pixels"
