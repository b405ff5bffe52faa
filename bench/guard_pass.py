"""The in-place guard over many imported files: one stat per file, and the
pace at which a daemon spreads them over ``guard_interval``.

Run: python -m bench.guard_pass [FILES]   (default 100000)
Target: one stat per file (nothing else read); a whole unpaced pass under a
minute, so that paced over a day it is about one stat a second.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.common import scratch_database, table, verdict
from omero_adi.notify import guard as guard_module
from omero_adi.notify.guard import Guard
from omero_adi.settings import build_settings

INSERT = sa.text(
    "INSERT INTO adi_guard_files (uuid, path, fileset_id, image_ids, plate_ids, size, "
    "mtime_ns, inode) VALUES (:uuid, :path, :fileset_id, '[1]', '[]', :size, :mtime_ns, :inode)")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with scratch_database() as (url, engine), tempfile.TemporaryDirectory() as folder:
        rows = []
        for number in range(count):
            path = Path(folder, f"{number // 1000:03d}", f"f{number}.tif")
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"x")
            found = path.stat()
            rows.append({"uuid": f"order-{number // 100}", "path": str(path),
                         "fileset_id": number, "size": found.st_size,
                         "mtime_ns": found.st_mtime_ns, "inode": found.st_ino})
        with engine.begin() as connection:
            connection.execute(INSERT, rows)
        settings = build_settings({"ingest_tracking_db": url, "base_dir": folder}, {})
        stats = 0
        real_stat = os.stat

        def counted(path: object, *args: object, **options: object) -> os.stat_result:
            nonlocal stats
            stats += 1
            return real_stat(path, *args, **options)  # type: ignore[arg-type]

        guard_module.os.stat = counted  # type: ignore[assignment]
        started = time.perf_counter()
        problems = Guard(settings, engine, None).check()
        seconds = time.perf_counter() - started
        guard_module.os.stat = real_stat
    per_day = seconds / 86400 * 100
    table(f"guard pass over {count} files (unpaced)", [
        ("stat calls per file", f"{stats / count:.2f}", "1", verdict(stats == count)),
        ("whole pass", f"{seconds:.1f} s", "< 60 s", verdict(seconds < 60)),
        ("files per second", f"{count / seconds:.0f}", "", ""),
        ("share of a day's interval spent working", f"{per_day:.3f} %", "", ""),
        ("problems found", str(len(problems)), "0", verdict(not problems)),
    ])
    print(json.dumps({"files": count, "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
