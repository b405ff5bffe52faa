"""Observability: ``/healthz`` and Prometheus ``/metrics`` on ``metrics_port``.

Off by default (``metrics_port: 0``). prometheus-client (the ``metrics``
extra) is imported only when the endpoint is switched on; without it the
daemon runs on and says why there is no endpoint.

``python -m omero_adi.metrics`` is the container's health probe: it asks
``/healthz`` of the daemon on this machine (or, with the endpoint off,
checks the order database) and exits 0 when healthy.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi.notify.guard import state_counts
from omero_adi.settings import Settings, SettingsError, load_settings
from omero_adi.store.models import FINAL_STAGES, STAGE_INGEST_STARTED
from omero_adi.store.queries import run
from omero_adi.store.queue import Claim

if TYPE_CHECKING:
    from omero_adi.daemon import Daemon

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'omero-adi[metrics]'"
#: Seconds a stage may take: from a quick failure to a day-long import.
STAGE_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
#: Seconds from queueing to claim: milliseconds by NOTIFY, the safety poll at worst.
PICKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Seconds an OMERO reachability answer is reused.
OMERO_CHECK_TTL = 30.0
#: Seconds, beyond its longest sleep, the daemon loop may take to come round.
LOOP_GRACE = 30.0
#: Claims whose pickup latency waits for the next scrape (older ones are dropped).
MAX_PENDING_PICKUPS = 10_000
#: Seconds the guard's counts of files by state are reused: counting them reads
#: the whole guard table, which may hold millions of files.
GUARD_COUNTS_TTL = 60.0

def waiting_orders(engine: Engine) -> int:
    """Queue entries nobody has claimed yet."""
    with engine.connect() as connection:
        return int(run(connection, "queue_waiting").scalar_one())


class DaemonMetrics:
    """Prometheus metrics fed by the daemon's ``on_event`` hook and, on scrape,
    by two small queries (queue depth, pickup latency of new claims), and at
    most every :data:`GUARD_COUNTS_TTL` seconds (of ``clock``) the guard's counts."""

    def __init__(self, daemon: Daemon, clock: Callable[[], float] = time.monotonic):
        import prometheus_client as prom

        self.daemon = daemon
        self._clock = clock
        #: When the guard's counts were last read (``clock``), None before the first.
        self._guard_counted: float | None = None
        self.registry = prom.CollectorRegistry()
        self._latest = prom.generate_latest
        self.content_type = prom.CONTENT_TYPE_LATEST
        self.finished = prom.Counter(
            "omero_adi_orders_finished", "Orders this daemon finished, by final stage.",
            ["stage"], registry=self.registry,
        )
        for stage in FINAL_STAGES:
            self.finished.labels(stage)
        self.stage_seconds = prom.Histogram(
            "omero_adi_stage_duration_seconds",
            "Time orders spent in a stage (Import Started, Import Preprocessing).",
            ["stage"], buckets=STAGE_BUCKETS, registry=self.registry,
        )
        self.pickup = prom.Histogram(
            "omero_adi_pickup_latency_seconds",
            "From an order entering the queue to its claim by this daemon.",
            buckets=PICKUP_BUCKETS, registry=self.registry,
        )
        self.waiting = prom.Gauge(
            "omero_adi_queue_waiting", "Orders waiting in the queue (all daemons).",
            registry=self.registry,
        )
        prom.Gauge(
            "omero_adi_orders_running", "Orders this daemon is running now.",
            registry=self.registry,
        ).set_function(lambda: len(daemon.running))
        self.importer_exits = prom.Counter(
            "omero_adi_importer_exits", "Runs of the OMERO importer, by exit status "
            "('timeout' when it was killed for running too long).",
            ["code"], registry=self.registry,
        )
        self.guard_files = prom.Gauge(
            "omero_adi_guard_files", "Files imported in place, by what the in-place guard "
            "last found: ok, missing, moved, changed, unreadable (all daemons; counted at "
            "most once a minute).",
            ["state"], registry=self.registry,
        )
        self.registry.register(ProgressCollector(daemon))
        prom.ProcessCollector(registry=self.registry)
        self._lock = threading.Lock()
        self._in_stage: dict[int, tuple[str, float]] = {}
        self._new_claims: deque[int] = deque(maxlen=MAX_PENDING_PICKUPS)

    def on_event(self, what: str, claim: Claim, stage: str) -> None:
        """The daemon's hook: ``claimed``, ``stage`` (entered), ``finished``, and
        the importer's ``importer_exit`` (its status in place of a stage)."""
        if what == "importer_exit":
            self.importer_exits.labels(stage).inc()
            return
        now = time.monotonic()
        key = claim.row.event_id
        with self._lock:
            if what == "claimed":
                self._in_stage[key] = (STAGE_INGEST_STARTED, now)
                self._new_claims.append(key)
                return
            entered = self._in_stage.pop(key, None)
            if what == "stage":
                self._in_stage[key] = (stage, now)
        if entered is not None:
            self.stage_seconds.labels(entered[0]).observe(now - entered[1])
        if what == "finished":
            self.finished.labels(stage).inc()

    def render(self) -> bytes:
        """The metrics page, after reading queue depth and new pickup latencies."""
        with self._lock:
            claimed = list(self._new_claims)
            self._new_claims.clear()
        try:
            with self.daemon.engine.connect() as connection:
                self.waiting.set(run(connection, "queue_waiting").scalar_one())
                self._count_guard_files(connection)
                if claimed:
                    for (seconds,) in run(connection, "pickup_seconds", event_ids=claimed):
                        self.pickup.observe(max(float(seconds), 0.0))
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read the queue (%s)", type(exc).__name__)
            self.waiting.set(math.nan)
            with self._lock:
                self._new_claims.extendleft(reversed(claimed))
        return bytes(self._latest(self.registry))

    def _count_guard_files(self, connection: Connection) -> None:
        """Refresh ``omero_adi_guard_files`` when its counts are older than
        :data:`GUARD_COUNTS_TTL`; between refreshes the gauge keeps the last ones."""
        now = self._clock()
        if self._guard_counted is not None and now - self._guard_counted < GUARD_COUNTS_TTL:
            return
        for state, count in state_counts(connection).items():
            self.guard_files.labels(state).set(count)
        self._guard_counted = now


class ProgressCollector:
    """``omero_adi_import_filesets{uuid, count}``: how far each running order's
    import is, read from the daemon at every scrape (finished orders drop out)."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "omero_adi_import_filesets",
            "Filesets of each running order: imported so far (count=imported) and found "
            "by the importer's scan (count=total, once known).",
            labels=["uuid", "count"],
        )
        with self.daemon.running_lock:
            progress = dict(self.daemon.progress)
        for uuid, state in progress.items():
            family.add_metric([uuid, "imported"], state.filesets_done)
            if state.filesets_total is not None:
                family.add_metric([uuid, "total"], state.filesets_total)
        yield family


class Health:
    """``/healthz``: the database answers, OMERO's port accepts connections
    (checked at most every :data:`OMERO_CHECK_TTL` s), the daemon loop and
    its workers are alive."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.settings = daemon.settings
        self._omero: tuple[float, bool, str] | None = None
        longest_sleep = min(self.settings.heartbeat_interval, self.settings.recovery_interval)
        self.loop_limit = longest_sleep + LOOP_GRACE

    def report(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        checks = {
            "database": self._database(),
            "omero": self._omero_port(),
            "loop": self._loop(),
            "workers": self._workers(),
        }
        report = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}
        return all(ok for ok, _ in checks.values()), report

    def _database(self) -> tuple[bool, str]:
        try:
            return True, f"{waiting_orders(self.daemon.engine)} order(s) waiting"
        except SQLAlchemyError as exc:
            return False, f"unreachable ({type(exc).__name__})"

    def _omero_port(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._omero is None or now - self._omero[0] > OMERO_CHECK_TTL:
            where = (self.settings.omero_host, self.settings.omero_port)
            try:
                socket.create_connection(where, timeout=3).close()
                self._omero = (now, True, f"{where[0]}:{where[1]} accepts connections")
            except OSError as exc:
                self._omero = (now, False, f"{where[0]}:{where[1]} unreachable ({exc})")
        return self._omero[1], self._omero[2]

    def _loop(self) -> tuple[bool, str]:
        if self.daemon.stopping.is_set():
            return False, "stopping"
        age = time.monotonic() - self.daemon.loop_seen
        if age > self.loop_limit:
            return False, f"stuck: last went round {age:.0f}s ago"
        return True, f"went round {age:.1f}s ago"

    def _workers(self) -> tuple[bool, str]:
        alive = sum(worker.is_alive() for worker in self.daemon.workers)
        return alive == self.settings.max_workers, f"{alive} of {self.settings.max_workers} alive"


class Endpoint:
    """The HTTP server, in a thread of its own; :meth:`close` stops it."""

    def __init__(self, port: int, metrics: DaemonMetrics, health: Health):
        self.metrics, self.health = metrics, health
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                endpoint.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics endpoint: " + format, *args)

        self.server = ThreadingHTTPServer(("", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-endpoint", daemon=True
        )
        self.thread.start()
        log.info("serving /healthz and /metrics on port %d", self.port)

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            status, content_type, body = 200, self.metrics.content_type, self.metrics.render()
        elif path == "/healthz":
            ok, report = self.health.report()
            status, content_type = (200 if ok else 503), "application/json"
            body = json.dumps({"status": "ok" if ok else "failing", "checks": report}).encode()
        else:
            status, content_type, body = 404, "text/plain", b"try /healthz or /metrics\n"
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(daemon: Daemon) -> Endpoint | None:
    """Start the endpoint when ``metrics_port`` asks for it and hook it to ``daemon``."""
    port = daemon.settings.metrics_port
    if not port:
        return None
    try:
        metrics = DaemonMetrics(daemon)
    except ImportError:
        log.error("metrics_port is %d but prometheus-client is not installed (%s): "
                  "running without /healthz and /metrics", port, INSTALL_HINT)
        return None
    try:
        endpoint = Endpoint(port, metrics, Health(daemon))
    except OSError as exc:
        raise SettingsError(f"metrics_port {port}: cannot listen ({exc.strerror})") from exc
    daemon.on_event = metrics.on_event
    return endpoint


def probe(settings: Settings) -> tuple[bool, str]:
    """The health of the daemon on this machine, for a container HEALTHCHECK."""
    if not settings.metrics_port:
        from omero_adi.checks import check_database

        ok, detail = check_database(settings)
        return ok, f"metrics_port is 0, database only: {detail}"
    url = f"http://127.0.0.1:{settings.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return True, response.read().decode()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode()
    except OSError as exc:
        return False, f"{url}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omero_adi.metrics",
                                     description="health probe of the local daemon")
    parser.add_argument("--config", help="settings file (YAML or JSON)")
    args = parser.parse_args(argv)
    try:
        ok, detail = probe(load_settings(args.config))
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    print(detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
