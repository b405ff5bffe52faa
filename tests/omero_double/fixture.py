"""The ``omero_double`` pytest fixture: a fresh double process per test.

The SSL certificate is made once per test session and shared, so a double
starts in well under a second or two (the time goes into importing omero-py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OmeroDouble:
    """A running double; see tests/omero_double/README.md for what each method does."""

    def __init__(self, state_dir: Path, cert_dir: Path):
        self.state_dir, self.cert_dir = state_dir, cert_dir
        self.port, self.control_port = free_port(), free_port()
        self.control_url = f"http://127.0.0.1:{self.control_port}"
        self.env: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None

    # --- the process ---------------------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ready = self.state_dir / "double.json"
        ready.unlink(missing_ok=True)
        log = open(self.state_dir / "double.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.omero_double", "--port", str(self.port),
             "--state", str(self.state_dir), "--control-port", str(self.control_port),
             "--cert-dir", str(self.cert_dir)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        log.close()
        deadline = time.monotonic() + START_DEADLINE
        while not ready.exists():  # written once the double listens
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the OMERO double did not start:\n"
                                   + (self.state_dir / "double.log").read_text())
            time.sleep(0.05)
        assert self.process.stdout is not None
        lines = []
        for raw in self.process.stdout:  # the environment, OMERO_DOUBLE_STATE last
            lines.append(raw.decode().strip())
            if lines[-1].startswith("OMERO_DOUBLE_STATE="):
                break
        self.env = dict(line.split("=", 1) for line in lines if "=" in line)

    def stop(self, kill: bool = False) -> None:
        """End the process (``kill``: as a crash would, without any clean-up)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def restart(self) -> None:
        """A crash and a restart on the same ports; the state survives."""
        self.stop(kill=True)
        self.start()

    # --- the control API -----------------------------------------------------
    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.control_url + path, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{path}: {exc.code} {exc.read().decode()}") from exc

    def state(self) -> dict[str, Any]:
        return self._call("/state")  # type: ignore[no-any-return]

    def fault(self, call: str, raise_: str | None = None, *, message: str = "",
              times: int = 1, stall_seconds: float = 0) -> None:
        self._call("/faults", {"call": call, "raise": raise_, "message": message,
                               "times": times, "stall_seconds": stall_seconds})

    def advance(self, seconds: float) -> None:
        self._call("/clock", {"advance_seconds": seconds})

    def refuse(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (connections refused, sessions' connections lost)."""
        self._call("/refuse", {"seconds": seconds})

    def world(self, spec: dict[str, Any]) -> None:
        self._call("/world", spec)

    def import_fileset(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("/import", body)  # type: ignore[no-any-return]

    def import_step(self, step: str, body: dict[str, Any]) -> dict[str, Any]:
        """One step of an import as the importer takes them: ``fileset``, ``transfer``
        or ``import`` (``POST /<step>``)."""
        return self._call("/" + step, body)  # type: ignore[no-any-return]

    def requests(self, session: str | None = None) -> int:
        """Requests served for one session, or for all together."""
        counts = self.state()["requests"]
        if session is not None:
            return int(counts.get(session, 0))
        return sum(counts.values())


@pytest.fixture(scope="session")
def omero_double_certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("omero-double-cert")
    from tests.omero_double.tls import certificate
    certificate(path)
    return path


@pytest.fixture
def omero_double(omero_double_certificates: Path) -> Iterator[OmeroDouble]:
    """A fresh OMERO double for one test (default world), stopped afterwards. Its state
    lives where the unprivileged importer can reach it (pytest's ``tmp_path`` is
    private to root)."""
    from tests.importer_standin import unprivileged

    root = unprivileged.workspace()
    double = OmeroDouble(root / "omero-double", omero_double_certificates)
    double.start()
    try:
        yield double
    finally:
        double.stop(kill=True)  # quicker, and the state on disk is complete at every moment
        unprivileged.discard(root)
