"""OMERO requests and wall time per order: 1, 10 and 100 images, annotations included.

The order goes through ``DataPackageImporter`` with the real omero-py,
ezomero and ``omero import`` wrapper (the importer stand-in behind it), into
the OMERO double (``tests/omero_double``), whose request counter gives the
figures. The admin session is opened by a first order that is not counted.
Two shapes: one file with N images (one fileset), and N files of one image
each (N filesets).

Run: python -m bench.omero_requests   (as root: the importer runs as ``adi-importer``)
Target: annotating 100 images takes no more requests than annotating 10.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from bench.common import table, verdict
from omero_adi.importing.importer import DataPackageImporter
from omero_adi.omero.blitz import BlitzServer
from omero_adi.orders import Order
from omero_adi.pipeline import OrderContext
from omero_adi.settings import Settings
from tests.importer_standin import formats, install, unprivileged
from tests.omero_double.fixture import OmeroDouble
from tests.omero_double.tls import certificate

SIZES = (1, 10, 100)
DATASET = 151  # the double's default world: researcher's Dataset in Demo


class Site:
    def __init__(self, root: Path):
        self.root = root
        certs = root / "certs"
        certs.mkdir()
        certificate(certs)
        self.double = OmeroDouble(root / "omero-double", certs)
        self.double.state_dir.mkdir()
        self.double.start()
        env = {**self.double.env,
               **install(self.double.state_dir / "bin", state_dir=self.double.state_dir)}
        os.environ["OMERO_USERDIR"] = env["OMERO_USERDIR"]  # as the daemon's own environment
        who = unprivileged.account()
        self.settings = Settings(
            omero_host=env["OMERO_HOST"], omero_port=int(env["OMERO_PORT"]),
            omero_user="root", omero_password="omero",
            omero_cli=str(unprivileged.launcher(root / "omero-as-importer", who, env)),
            log_file_path=str(root / "logs" / "app.logs"), base_dir=str(root / "data"),
            managed_repository=str(self.double.state_dir / "ManagedRepository"),
        )
        unprivileged.give(who, root / "logs", root / "data")
        self.importer = DataPackageImporter(BlitzServer(self.settings))
        self.count = 0

    def order(self, files: list[Path]) -> tuple[int, float]:
        """Requests the double served for one order, and the order's wall time (s)."""
        self.count += 1
        order = Order(event_id=self.count, uuid=f"bench-{self.count}", group="Demo",
                      user="researcher", destination_id=DATASET, destination_type="Dataset",
                      files=tuple(files), file_names=tuple(f.name for f in files))
        ctx = OrderContext(order=order, settings=self.settings,
                           log=logging.LoggerAdapter(logging.getLogger("bench"), {}),
                           record_stage=lambda stage, description: None,
                           cancelled=threading.Event())
        before, started = self.double.requests(), time.perf_counter()
        self.importer(ctx)
        return self.double.requests() - before, time.perf_counter() - started

    def close(self) -> None:
        self.importer.close()
        self.double.stop()


def main() -> None:
    root = unprivileged.workspace()
    site = Site(root)
    data = root / "data"
    try:
        site.order([formats.image(data / "warm-up.tif")])  # opens the admin session
        series, files = {}, {}
        for n in SIZES:
            series[n] = site.order([formats.image(data / f"series-{n}.tif", series=n)])
            files[n] = site.order([formats.image(data / f"files-{n}" / f"{i}.tif")
                                   for i in range(n)])
    finally:
        site.close()
        unprivileged.discard(root)
    rows = [(f"{n} image(s): one file / {n} file(s)",
             f"{series[n][0]} / {files[n][0]} requests, "
             f"{series[n][1]:.1f} s / {files[n][1]:.1f} s", "", "")
            for n in SIZES]
    rows.append(("one file: 100 images vs 10", f"{series[100][0]} vs {series[10][0]}", "≤",
                 verdict(series[100][0] <= series[10][0])))
    table("OMERO requests and wall time per order (double's counter; admin login excluded)",
          rows)


if __name__ == "__main__":
    main()
