"""Real Podman for the preprocessing tests: provisioning, test images, API service.

Also the helpers those tests share: orders with preprocessing, a recording
:class:`OrderContext`, settings with local folders, digests of originals.
Import the fixtures into a test module (``from tests.podman_fixtures import
...``). Without a working Podman the fixtures fail the tests loudly: they
never skip.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from omero_adi.orders import Order, PreprocessingSpec
from omero_adi.pipeline import OrderContext
from omero_adi.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PROVISION = REPO / "scripts" / "provision-podman.sh"
SCRIPTS = Path(__file__).resolve().parent / "podman_images"
BASE_IMAGE = "localhost/adi-busybox:latest"
#: Test image name -> the shell script it runs as its entrypoint.
IMAGES = {
    "convert": "convert.sh",
    "fail": "fail.sh",
    "hang": "hang.sh",
    "escape": "escape.sh",
}
#: The allow-list pattern that covers every test image.
ALLOW_PATTERN = "localhost/adi-test-*"


def image_name(kind: str) -> str:
    return f"localhost/adi-test-{kind}:latest"


def _provision(*extra: str) -> str:
    result = subprocess.run(
        ["bash", str(PROVISION), "--no-verify", *extra],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"Podman is required for the preprocessing tests and could not be set up "
            f"({PROVISION} exited {result.returncode}):\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    return result.stdout.strip()


@pytest.fixture(scope="session")
def podman_ready() -> str:
    """Podman installed and configured, with the base image: the podman executable."""
    _provision()
    executable = shutil.which("podman")
    if executable is None:
        pytest.fail("podman is not on PATH after provisioning", pytrace=False)
    return executable


@pytest.fixture(scope="session")
def podman_images(podman_ready: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test images, built offline FROM the base image: kind -> image name."""
    for kind, script in IMAGES.items():
        context = tmp_path_factory.mktemp(f"image-{kind}")
        shutil.copy(SCRIPTS / script, context / "entry.sh")
        (context / "Containerfile").write_text(
            f"FROM {BASE_IMAGE}\nCOPY entry.sh /entry.sh\n"
            'ENTRYPOINT ["/bin/sh", "/entry.sh"]\n'
        )
        result = subprocess.run(
            [podman_ready, "build", "--pull=never", "-t", image_name(kind), str(context)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"building {image_name(kind)} failed:\n{result.stderr[-3000:]}",
                        pytrace=False)
    return {kind: image_name(kind) for kind in IMAGES}


@pytest.fixture(scope="session")
def podman_service(podman_ready: str) -> Iterator[str]:
    """A Podman API service of its own for this session: its ``unix://`` URL."""
    socket = Path(f"/tmp/adi-test-podman-{uuid.uuid4().hex[:10]}.sock")
    url = _provision("--service", str(socket))
    yield url
    pid_file = Path(f"{socket}.pid")
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
    for leftover in (socket, pid_file, Path(f"{socket}.log")):
        leftover.unlink(missing_ok=True)


def make_order(files: list[Path], *, container: str, uuid_: str | None = None,
               destination_type: str = "Dataset", extra: dict[str, str] | None = None,
               alt: str | None = "/out") -> Order:
    """A validated order with preprocessing, as the daemon would hand it over."""
    return Order(
        event_id=1,
        uuid=uuid_ or str(uuid.uuid4()),
        group="lab",
        user="alice",
        destination_id=7,
        destination_type=destination_type,  # type: ignore[arg-type]
        files=tuple(files),
        file_names=tuple(f.name for f in files),
        preprocessing=PreprocessingSpec(
            id=1, container=container, input_file="{Files}", output_folder="/data",
            alt_output_folder=alt, extra_params=extra or {},
        ),
    )


@dataclass
class Recorded:
    """An :class:`OrderContext` whose stage events are kept in a list."""

    ctx: OrderContext
    stages: list[tuple[str, str | None]]


def make_context(order: Order, settings: Settings) -> Recorded:
    stages: list[tuple[str, str | None]] = []
    ctx = OrderContext(
        order=order,
        settings=settings,
        log=logging.LoggerAdapter(logging.getLogger(f"test.order.{order.uuid}"), {}),
        record_stage=lambda stage, description: stages.append((stage, description)),
        cancelled=threading.Event(),
    )
    return Recorded(ctx, stages)


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test: local folders under ``tmp_path``, test images allowed."""
    values: dict[str, object] = {
        "allowed_containers": [ALLOW_PATTERN],
        "inplace_tmp_root": str(tmp_path / "inplace"),
        "managed_repository": str(tmp_path / "ManagedRepository"),
        "preprocessing_timeout": 120.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except ``.processed``: the originals."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and ".processed" not in path.relative_to(folder).parts
    }
