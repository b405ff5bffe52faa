"""Containers whose bind mount is busy (EBUSY from CIFS/DFS shares) run again:
PODMAN_BIND_RETRY_ATTEMPTS runs in all, PODMAN_BIND_RETRY_DELAY_SECONDS apart.

The busy mount itself cannot be made on a test machine, so it enters at the
engine seam: an engine that fails as the real ones do (the OCI runtime's
message, crun's ``mount `SRC` to `DST`: <strerror>`` behind podman's
``Error: crun: …: OCI runtime error`` and exit status 126), then a real
Podman run.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from podman.errors import APIError

from omero_adi.importing.containers import ContainerRun, build_run
from omero_adi.importing.engines import (
    BindMountBusy,
    ContainerEngine,
    ContainerOutput,
    PodmanApi,
    PodmanCli,
    is_busy_mount,
)
from omero_adi.importing.preprocess import preprocess
from omero_adi.pipeline import OrderFailed
from tests.podman_fixtures import (  # noqa: F401  (fixtures)
    make_context,
    make_order,
    podman_images,
    podman_ready,
    settings_for,
)

CRUN_BUSY = ("Error: crun: mount `/mnt/share/run1` to `/data`: Device or resource busy: "
             "OCI runtime error")


class BusyFirst:
    """An engine whose first ``busy`` runs fail with a busy bind mount (setting
    ``shutdown``, when given, as a daemon stopping meanwhile would); later runs go
    to ``then`` (a real engine), or fail loudly when there is none."""

    def __init__(self, busy: int, then: ContainerEngine | None = None,
                 shutdown: threading.Event | None = None):
        self.busy, self.then, self.shutdown, self.calls = busy, then, shutdown, 0
        self.description = "busy-first test engine"

    def run(self, run: ContainerRun, *, timeout: float,
            cancelled: threading.Event) -> ContainerOutput:
        self.calls += 1
        if self.calls <= self.busy:
            if self.shutdown is not None:
                self.shutdown.set()
            raise BindMountBusy(f"podman could not start {run.image}: {CRUN_BUSY}")
        if self.then is None:
            raise AssertionError("BusyFirst ran past its busy runs without a real engine")
        return self.then.run(run, timeout=timeout, cancelled=cancelled)


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "share" / "one.tif"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"first image")
    return path


def test_busy_mount_runs_again_then_the_real_container_converts(
    tmp_path: Path, image_file: Path, podman_ready: str,  # noqa: F811
    podman_images: dict[str, str],  # noqa: F811
) -> None:
    engine = BusyFirst(2, then=PodmanCli(podman_ready))
    settings = settings_for(tmp_path, podman_bind_retry_delay_seconds=0.0)
    recorded = make_context(make_order([image_file], container=podman_images["convert"]),
                            settings)
    result = preprocess(recorded.ctx, engine)
    assert engine.calls == 3  # two busy, the third (default attempts: 3) real
    assert [item.path.name for item in result.to_import] == ["one.converted.tif"]
    assert (image_file.parent / ".processed" / "one.converted.tif").is_file()
    assert image_file.read_bytes() == b"first image"


def test_busy_on_every_attempt_fails_saying_so(tmp_path: Path, image_file: Path) -> None:
    engine = BusyFirst(99)
    settings = settings_for(tmp_path, podman_bind_retry_attempts=4,
                            podman_bind_retry_delay_seconds=0.0)
    recorded = make_context(make_order([image_file], container="localhost/adi-test-convert"),
                            settings)
    with pytest.raises(OrderFailed) as failed:
        preprocess(recorded.ctx, engine)
    assert engine.calls == 4
    assert "Device or resource busy" in str(failed.value)
    assert "busy on all 4 attempt(s); podman_bind_retry_attempts" in str(failed.value)
    assert not (tmp_path / "inplace").exists() or not any((tmp_path / "inplace").iterdir())


def test_cancelled_while_waiting_to_run_again(tmp_path: Path, image_file: Path) -> None:
    settings = settings_for(tmp_path, podman_bind_retry_delay_seconds=3600.0)
    recorded = make_context(make_order([image_file], container="localhost/adi-test-convert"),
                            settings)
    engine = BusyFirst(1, shutdown=recorded.ctx.cancelled)  # the hour-long wait ends at once
    with pytest.raises(OrderFailed, match="daemon is shutting down"):
        preprocess(recorded.ctx, engine)
    assert engine.calls == 1


def test_the_cli_engine_reports_a_busy_mount(tmp_path: Path, image_file: Path) -> None:
    """podman's exit status 126 with the runtime's EBUSY: BindMountBusy; the same text
    from the container's own program (any other status) is its output."""
    fake = tmp_path / "podman"
    run = build_run(make_order([image_file], container="localhost/adi-test-convert"),
                    image_file, settings_for(tmp_path))
    for status, busy in ((126, True), (1, False)):
        fake.write_text(f"#!/bin/sh\necho '{CRUN_BUSY}' >&2\nexit {status}\n")
        fake.chmod(0o755)
        engine = PodmanCli(str(fake))
        if busy:
            with pytest.raises(BindMountBusy, match="Device or resource busy"):
                engine.run(run, timeout=30, cancelled=threading.Event())
        else:
            output = engine.run(run, timeout=30, cancelled=threading.Event())
            assert (output.exit_code, CRUN_BUSY in output.stderr) == (1, True)


class BusyContainer:
    """A podman-py container whose start fails as the API service reports a busy mount."""

    def __init__(self) -> None:
        self.removed = False

    def start(self) -> None:
        raise APIError("500 Server Error", explanation=CRUN_BUSY.removeprefix("Error: "))

    def remove(self, force: bool = False) -> None:
        self.removed = force


def test_the_api_engine_reports_a_busy_mount(tmp_path: Path, image_file: Path) -> None:
    run = build_run(make_order([image_file], container="localhost/adi-test-convert"),
                    image_file, settings_for(tmp_path))
    container = BusyContainer()
    with pytest.raises(BindMountBusy, match="mount `/mnt/share/run1` to `/data`"):
        PodmanApi("unix:///unused")._run_created(container, run, 30, threading.Event())
    assert container.removed


@pytest.mark.parametrize("message, busy", [
    (CRUN_BUSY, True),
    ("Error: runc: mounting \"/mnt/share\" to rootfs at \"/data\": EBUSY", True),
    ("Error: statfs /mnt/share: no such file or directory", False),
    ("converter: output file busy, retrying", False),
])
def test_what_counts_as_a_busy_mount(message: str, busy: bool) -> None:
    assert is_busy_mount(message) is busy
