"""Watch folders: the cost of rescanning a large quiet tree, and how soon new
files become orders.

Run: python -m bench.watch_folders [FILES] [FOLDERS]   (default 100000 1000)
Targets: a rescan with nothing new costs <= 0.5 s CPU; one new file among
them is ordered within settle_seconds + scan_interval + 1 s; 1,000 files
dropped at once are all ordered, once each, within settle_seconds + 10 s.

The tree's files are units ordered earlier: their ledger rows are written in
bulk first, so the watcher starts on a tree it has already handled. Times
of orders are the database's (``imports.timestamp``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.common import scratch_database, table, verdict
from omero_adi.settings import build_settings
from omero_adi.watch import ledger
from omero_adi.watch.runner import WatchRunner
from omero_adi.watch.scan import fingerprint

SETTLE, INTERVAL = 3.0, 3.0


def build_tree(root: Path, files: int, folders: int) -> list[Path]:
    paths = []
    for n in range(files):
        path = root / f"folder-{n % folders:04d}" / f"image-{n:06d}.tif"
        if n < folders:
            path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        paths.append(path)
    return paths


def record_as_ordered(engine: sa.Engine, rule_name: str, watcher: WatchRunner,
                      paths: list[Path]) -> None:
    rule = watcher.rules[rule_name].rule
    rows = []
    for path in paths:
        look = fingerprint(rule, str(path))
        assert look is not None
        rows.append({"unit_key": ledger.unit_key(str(path)), "rule": rule_name,
                     "path": str(path), "kind": "file", "state": "ordered",
                     "fingerprint": look.as_json()})
    with engine.begin() as connection:
        connection.execute(ledger.units.insert(), rows)


def orders_since(engine: sa.Engine, folder: Path) -> list[float]:
    """Unix times of the Pending rows for files under ``folder``."""
    with engine.connect() as connection:
        return [float(t) for (t,) in connection.execute(sa.text(
            "SELECT extract(epoch FROM timestamp) FROM imports WHERE stage = 'Import Pending' "
            "AND files LIKE :prefix"), {"prefix": f'["{folder}/%'})]


def wait_orders(engine: sa.Engine, folder: Path, count: int, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = orders_since(engine, folder)
        if len(times) >= count:
            return times
        time.sleep(0.1)
    raise SystemExit(f"only {len(orders_since(engine, folder))} of {count} orders in {timeout}s")


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    folders = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    with scratch_database() as (url, engine), tempfile.TemporaryDirectory(
            prefix="adi-bench-watch-") as scratch:
        root = Path(scratch)
        started = time.monotonic()
        paths = build_tree(root / "tree", files, folders)
        print(f"{files} files written in {time.monotonic() - started:.0f}s", flush=True)
        (root / "drop").mkdir()
        rules = [{"name": name, "folder": str(root / name), "group": "lab", "user": "alice",
                  "dataset_id": 1, "settle_seconds": SETTLE, "scan_interval": INTERVAL}
                 for name in ("tree", "drop")]
        settings = build_settings({"ingest_tracking_db": url, "base_dir": scratch,
                                   "watch": rules}, {})
        watcher = WatchRunner(settings, engine, None)
        record_as_ordered(engine, "tree", watcher, paths)
        print(f"tree of {files} files in {folders} folders ready in "
              f"{time.monotonic() - started:.0f}s", flush=True)
        tree = watcher.rules["tree"]
        cpu = time.thread_time()
        watcher.scan(tree)
        first = time.thread_time() - cpu
        rescans = []
        for _ in range(5):
            cpu = time.thread_time()
            result = watcher.scan(tree)
            rescans.append(time.thread_time() - cpu)
            assert len(result.units) == files and not tree.settler.waiting
        watcher.start()
        try:
            time.sleep(INTERVAL)  # somewhere within the watcher's interval
            written = time.time()
            middle = root / "tree" / f"folder-{folders // 2:04d}"
            (middle / "new.tif").write_bytes(b"new pixels")
            [ordered] = wait_orders(engine, middle, 1, 60)
            one_new = ordered - written
            dropped = time.time()
            for n in range(1_000):
                (root / "drop" / f"batch-{n:04d}.tif").write_bytes(b"pixels")
            times = wait_orders(engine, root / "drop", 1_000, 120)
            batch = max(times) - dropped
        finally:
            watcher.stop()
        ordered_once = len(times) == 1_000 and len(ledger.known_units(engine, "drop")) == 1_000
    worst = max(rescans)
    table(f"watch folders: {files} files in {folders} folders, settle {SETTLE:.0f} s, "
          f"interval {INTERVAL:.0f} s", [
              ("first scan after start (CPU, checks every unit)", f"{first:.2f} s", "", ""),
              ("rescan, nothing new (CPU, median of 5)", f"{statistics.median(rescans):.3f} s",
               "<= 0.5 s", verdict(statistics.median(rescans) <= 0.5)),
              ("rescan, nothing new (CPU, worst of 5)", f"{worst:.3f} s", "<= 0.5 s",
               verdict(worst <= 0.5)),
              ("one new file: written -> Pending", f"{one_new:.2f} s",
               f"<= {SETTLE + INTERVAL + 1:.0f} s", verdict(one_new <= SETTLE + INTERVAL + 1)),
              ("1,000 files dropped: first write -> last Pending", f"{batch:.2f} s",
               f"<= {SETTLE + 10:.0f} s", verdict(batch <= SETTLE + 10)),
              ("1,000 files: each ordered once", str(ordered_once), "True",
               verdict(ordered_once)),
          ])


if __name__ == "__main__":
    main()
