"""The /healthz and /metrics endpoint, against a real daemon on PostgreSQL."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from omero_adi import metrics
from omero_adi.pipeline import OrderContext, OrderFailed
from omero_adi.settings import Settings, build_settings
from omero_adi.store.models import STAGE_PREPROCESSING
from omero_adi.store.session import open_store
from tests.helpers import current_stage, free_port, insert_order, running_daemon, wait_for


@pytest.fixture
def omero_port() -> Iterator[int]:
    """A port that accepts connections, standing in for OMERO's."""
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def make_settings(url: str, tmp_path: Path, omero_port: int, **extra: Any) -> Settings:
    (tmp_path / "data").mkdir(exist_ok=True)
    values = {
        "ingest_tracking_db": url, "base_dir": str(tmp_path / "data"), "max_workers": 2,
        "metrics_port": free_port(), "omero_host": "127.0.0.1", "omero_port": omero_port,
        "shutdown_timeout": 5,
    }
    return build_settings({**values, **extra}, {})


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def handler(ctx: OrderContext) -> str:
    name = ctx.order.files[0].name
    if name.startswith("pre"):
        ctx.record_stage(STAGE_PREPROCESSING, None)
    if name.startswith("bad"):
        ctx.emit("importer_exit", "2")
        raise OrderFailed("bad sample")
    ctx.emit("importer_exit", "0")
    return "ok"


def test_counters_follow_orders_and_healthz_is_green(pg_url, tmp_path, omero_port) -> None:
    settings = make_settings(pg_url, tmp_path, omero_port)
    engine = open_store(settings)
    files = {}
    for name in ("plain.tif", "pre.tif", "bad.tif"):
        files[name] = tmp_path / "data" / name
        files[name].write_bytes(b"x")
    with running_daemon(settings, engine, handler) as daemon:
        endpoint = metrics.serve(daemon)
        assert endpoint is not None
        try:
            port = settings.metrics_port
            before = samples(port)
            completed = ("omero_adi_orders_finished_total", (("stage", "Import Completed"),))
            assert before[completed] == 0
            for name, path in files.items():
                insert_order(engine, f"m-{path.stem}", [str(path)])
            wait_for(lambda: all(current_stage(engine, f"m-{Path(n).stem}") in
                                 ("Import Completed", "Import Failed") for n in files),
                     what="orders to finish")
            wait_for(lambda: not daemon.running, what="workers to let go")
            after = samples(port)
            status, body = get(port, "/healthz")
        finally:
            endpoint.close()
    assert after[completed] == 2
    assert after[("omero_adi_orders_finished_total", (("stage", "Import Failed"),))] == 1
    started = ("omero_adi_stage_duration_seconds_count", (("stage", "Import Started"),))
    assert after[started] == 3
    assert after[("omero_adi_stage_duration_seconds_count",
                  (("stage", "Import Preprocessing"),))] == 1
    assert after[("omero_adi_pickup_latency_seconds_count", ())] == 3
    # Seconds, by NOTIFY: each pickup well under one (milliseconds would read as thousands).
    assert 0 <= after[("omero_adi_pickup_latency_seconds_sum", ())] < 3
    assert after[("omero_adi_importer_exits_total", (("code", "0"),))] == 2
    assert after[("omero_adi_importer_exits_total", (("code", "2"),))] == 1
    assert after[("omero_adi_queue_waiting", ())] == 0
    assert after[("omero_adi_orders_running", ())] == 0
    assert status == 200, body
    report = json.loads(body)
    assert report["status"] == "ok"
    assert set(report["checks"]) == {"database", "omero", "loop", "workers"}
    assert report["checks"]["workers"]["detail"] == "2 of 2 alive"


def test_running_and_waiting_gauges_while_busy(pg_url, tmp_path, omero_port) -> None:
    settings = make_settings(pg_url, tmp_path, omero_port, max_workers=1)
    engine = open_store(settings)
    release = threading.Event()

    def blocking(ctx: OrderContext) -> str:
        release.wait(20)
        return "ok"

    path = tmp_path / "data" / "a.tif"
    path.write_bytes(b"x")
    with running_daemon(settings, engine, blocking) as daemon:
        endpoint = metrics.serve(daemon)
        assert endpoint is not None
        try:
            for number in range(3):
                insert_order(engine, f"busy-{number}", [str(path)])
            wait_for(lambda: daemon.running, what="an order to run")
            now = samples(settings.metrics_port)
            assert now[("omero_adi_orders_running", ())] == 1
            assert now[("omero_adi_queue_waiting", ())] == 2
            assert get(settings.metrics_port, "/nothing")[0] == 404
        finally:
            release.set()
            endpoint.close()


def test_the_guards_counts_are_read_at_most_once_a_minute(db_url, tmp_path) -> None:
    """Counting the guard's files reads its whole table: not on every scrape."""
    engine = open_store(build_settings({"ingest_tracking_db": db_url}, {}))
    counts: list[str] = []

    def count(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM adi_guard_files" in statement:
            counts.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)

    def record(state: str) -> None:
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO adi_guard_files (uuid, path, fileset_id, image_ids, plate_ids, size, "
                "mtime_ns, inode, state) VALUES ('o', :path, 1, '[]', '[]', 1, 1, 1, :state)"),
                {"path": f"/data/{state}.tif", "state": state})

    def scrape() -> dict[str, float]:
        page = metrics_page.render().decode()
        return {s.labels["state"]: s.value for family in text_string_to_metric_families(page)
                for s in family.samples if s.name == "omero_adi_guard_files"}

    now = 1000.0
    daemon = SimpleNamespace(engine=engine, running={}, progress={}, running_lock=threading.Lock())
    metrics_page = metrics.DaemonMetrics(daemon, clock=lambda: now)  # type: ignore[arg-type]
    record("ok")
    assert scrape()["ok"] == 1 and len(counts) == 1
    record("missing")
    for now in (1015.0, 1030.0, 1059.9):  # scrapes within the minute: the last counts
        assert scrape() == {"ok": 1, "missing": 0, "moved": 0, "changed": 0, "unreadable": 0}
    assert len(counts) == 1
    now = 1060.0
    assert scrape()["missing"] == 1 and len(counts) == 2
    engine.dispose()


def test_healthz_fails_when_omero_does_not_answer(sqlite_url, tmp_path) -> None:
    settings = make_settings(sqlite_url, tmp_path, free_port())
    engine = open_store(settings)
    with running_daemon(settings, engine, handler) as daemon:
        endpoint = metrics.serve(daemon)
        assert endpoint is not None
        try:
            status, body = get(settings.metrics_port, "/healthz")
        finally:
            endpoint.close()
    assert status == 503
    checks = json.loads(body)["checks"]
    assert not checks["omero"]["ok"] and "unreachable" in checks["omero"]["detail"]
    assert checks["database"] == {"ok": True, "detail": "0 order(s) waiting"}
    assert checks["loop"]["ok"]


def test_without_prometheus_client_the_daemon_runs_and_says_so(
    sqlite_url, tmp_path, omero_port, monkeypatch, caplog
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    settings = make_settings(sqlite_url, tmp_path, omero_port)
    with running_daemon(settings, open_store(settings), handler) as daemon:
        with caplog.at_level(logging.ERROR):
            assert metrics.serve(daemon) is None
    assert "prometheus-client is not installed" in caplog.text
    assert "pip install 'omero-adi[metrics]'" in caplog.text


def test_endpoint_is_off_by_default(sqlite_url, tmp_path, omero_port) -> None:
    settings = make_settings(sqlite_url, tmp_path, omero_port, metrics_port=0)
    with running_daemon(settings, open_store(settings), handler) as daemon:
        assert metrics.serve(daemon) is None


def test_the_daemon_command_serves_the_endpoint_and_the_probe_reads_it(
    tmp_path, omero_port
) -> None:
    port = free_port()
    config = tmp_path / "config" / "settings.yml"
    config.parent.mkdir()
    config.write_text(
        f"ingest_tracking_db: sqlite:///{tmp_path / 'orders.sqlite'}\n"
        f"base_dir: {tmp_path}\nmetrics_port: {port}\n"
        f"omero_host: 127.0.0.1\nomero_port: {omero_port}\n"
    )
    daemon = subprocess.Popen([sys.executable, "-m", "omero_adi.main"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # 503 until the daemon has started its workers, then 200
        wait_for(lambda: _healthz_status(port) == 200, what="a healthy endpoint")
        assert metrics.main(["--config", str(config)]) == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, errors = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, errors.decode()
    assert f"serving /healthz and /metrics on port {port}" in errors.decode()
    assert metrics.main(["--config", str(config)]) == 1  # nobody answers any more


def test_probe_without_endpoint_checks_the_database(tmp_path, capsys) -> None:
    config = tmp_path / "settings.yml"
    config.write_text(f"ingest_tracking_db: sqlite:///{tmp_path / 'none.sqlite'}\n")
    assert metrics.main(["--config", str(config)]) == 1
    assert "metrics_port is 0, database only" in capsys.readouterr().out


def _healthz_status(port: int) -> int | None:
    try:
        return get(port, "/healthz")[0]
    except OSError:
        return None  # not listening yet
