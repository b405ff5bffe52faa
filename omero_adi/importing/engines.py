"""How a :class:`~omero_adi.importing.containers.ContainerRun` is run: Podman API or CLI.

:func:`connect` picks the Podman API service (podman-py) when a socket
answers, else the ``podman`` command line. Both kill a container that
outlives its time limit or whose order is cancelled, and both remove it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol

from omero_adi.importing.containers import ContainerRun
from omero_adi.pipeline import OrderFailed
from omero_adi.process import run_process
from omero_adi.settings import Settings

#: The sockets a Podman API service usually listens on.
ROOT_SOCKET = "unix:///run/podman/podman.sock"
USER_SOCKET = "unix://{runtime}/podman/podman.sock"
#: Seconds one API wait lasts before the time limit and cancellation are checked.
WAIT_POLL = 1.0
#: The kernel's EBUSY, as the OCI runtime reports a bind mount it could not make.
BUSY = re.compile(r"device or resource busy|\bEBUSY\b", re.IGNORECASE)
#: ``podman run``'s own exit codes: the container's program never started.
PODMAN_RUN_ERRORS = (125, 126, 127)


class BindMountBusy(OrderFailed):
    """A bind mount of the container failed with EBUSY (CIFS/DFS shares do this at
    times): the container never ran, and another run may well succeed."""


def is_busy_mount(message: str) -> bool:
    return bool(BUSY.search(message)) and "mount" in message.lower()


@dataclass(frozen=True)
class ContainerOutput:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    cancelled: bool = False


class ContainerEngine(Protocol):
    description: str

    def run(
        self, run: ContainerRun, *, timeout: float, cancelled: threading.Event
    ) -> ContainerOutput: ...


def _decode(chunks: bytes | Iterable[bytes]) -> str:
    data = chunks if isinstance(chunks, bytes) else b"".join(chunks)
    return data.decode("utf-8", errors="replace")


class PodmanApi:
    """Containers through the Podman API service, with podman-py."""

    def __init__(self, url: str):
        self.url = url
        self.description = f"Podman API at {url}"

    @classmethod
    def answering(cls, url: str) -> PodmanApi | None:
        """An engine for ``url`` when a service answers there, else None."""
        from podman import PodmanClient
        from podman.errors import APIError

        try:
            with PodmanClient(base_url=url) as client:
                return cls(url) if client.ping() else None
        except (APIError, OSError, ValueError):
            return None

    def create_kwargs(self, run: ContainerRun) -> dict[str, Any]:
        """The arguments of ``containers.create`` for ``run``."""
        kwargs: dict[str, Any] = {
            "command": list(run.args),
            "name": run.name,
            "mounts": [
                {"type": "bind", "source": str(m.source), "target": m.target,
                 "read_only": m.read_only}
                for m in run.mounts
            ],
        }
        if run.userns:
            kwargs["userns_mode"] = run.userns
        return kwargs

    def run(
        self, run: ContainerRun, *, timeout: float, cancelled: threading.Event
    ) -> ContainerOutput:
        from podman import PodmanClient
        from podman.errors import APIError

        with PodmanClient(base_url=self.url) as client:
            try:
                if not client.images.exists(run.image):
                    client.images.pull(run.image)
                container = client.containers.create(run.image, **self.create_kwargs(run))
            except APIError as exc:
                raise OrderFailed(
                    f"Podman could not create the container {run.image} for "
                    f"{run.source.name}: {exc.explanation or exc}"
                ) from exc
            return self._run_created(container, run, timeout, cancelled)

    def _run_created(
        self, container: Any, run: ContainerRun, timeout: float, cancelled: threading.Event
    ) -> ContainerOutput:
        """Start, wait, read the output, and always remove the container."""
        from podman.errors import APIError

        try:
            container.start()
            exit_code, timed_out, was_cancelled = self._wait(container, timeout, cancelled)
            return ContainerOutput(
                exit_code,
                _decode(container.logs(stdout=True, stderr=False)),
                _decode(container.logs(stdout=False, stderr=True)),
                timed_out,
                was_cancelled,
            )
        except APIError as exc:
            failure = BindMountBusy if is_busy_mount(str(exc.explanation or exc)) else OrderFailed
            raise failure(
                f"Podman failed running {run.image} for {run.source.name}: "
                f"{exc.explanation or exc}"
            ) from exc
        finally:
            with contextlib.suppress(APIError):
                container.remove(force=True)

    @staticmethod
    def _wait(
        container: Any, timeout: float, cancelled: threading.Event
    ) -> tuple[int | None, bool, bool]:
        """(exit code, timed out, cancelled), killing the container when it must stop."""
        from podman.errors import APIError
        from requests.exceptions import Timeout

        deadline = time.monotonic() + timeout
        while True:
            try:
                return int(container.wait(timeout=WAIT_POLL)), False, False
            except APIError as exc:
                if not isinstance(exc.__cause__, Timeout):
                    raise
            timed_out = time.monotonic() > deadline
            if timed_out or cancelled.is_set():
                container.kill(signal="SIGKILL")
                container.wait()
                return None, timed_out, not timed_out


class PodmanCli:
    """Containers through the ``podman`` command line (no API service needed)."""

    def __init__(self, executable: str = "podman"):
        self.executable = executable
        self.description = f"podman command line ({executable})"

    def arguments(self, run: ContainerRun) -> list[str]:
        """The ``podman run`` command for ``run``: a list, never shell text."""
        argv = [self.executable, "run", "--rm", "--name", run.name]
        if run.userns:
            argv.append(f"--userns={run.userns}")
        for mount in run.mounts:
            if ":" in str(mount.source):
                raise OrderFailed(
                    f"the podman command line cannot mount {mount.source} (it contains ':'); "
                    "configure the Podman API socket (podman_url)"
                )
            argv += ["-v", f"{mount.source}:{mount.target}" + (":ro" if mount.read_only else "")]
        return [*argv, run.image, *run.args]

    def run(
        self, run: ContainerRun, *, timeout: float, cancelled: threading.Event
    ) -> ContainerOutput:
        finished = run_process(self.arguments(run), timeout=timeout, cancelled=cancelled)
        stdout, stderr = finished.stdout, finished.stderr
        if finished.timed_out or finished.cancelled:
            # Killing the client leaves the container behind: remove it too.
            subprocess.run(
                [self.executable, "rm", "--force", "--ignore", "--time", "0", run.name],
                capture_output=True, timeout=120, check=False,
            )
            return ContainerOutput(None, stdout, stderr, finished.timed_out, finished.cancelled)
        if finished.returncode in PODMAN_RUN_ERRORS and is_busy_mount(stderr):
            raise BindMountBusy(f"podman could not start {run.image} for {run.source.name}: "
                                f"{stderr.strip()[-500:]}")
        return ContainerOutput(finished.returncode, stdout, stderr)


def run_retrying_busy_mounts(
    engine: ContainerEngine, run: ContainerRun, settings: Settings, cancelled: threading.Event,
    log: logging.LoggerAdapter[logging.Logger],
) -> ContainerOutput:
    """``engine.run``, again after ``podman_bind_retry_delay_seconds`` while a bind
    mount fails as busy, ``podman_bind_retry_attempts`` runs in all."""
    attempts, attempt = settings.podman_bind_retry_attempts, 1
    while True:
        try:
            return engine.run(run, timeout=settings.preprocessing_timeout, cancelled=cancelled)
        except BindMountBusy as exc:
            if attempt >= attempts:
                raise BindMountBusy(f"{exc} (a bind mount was busy on all {attempts} "
                                    "attempt(s); podman_bind_retry_attempts)") from exc
            delay = settings.podman_bind_retry_delay_seconds
            log.warning("attempt %d of %d: a bind mount is busy; running %s again in %gs: %s",
                        attempt, attempts, run.image, delay, exc)
            if cancelled.wait(delay):
                return ContainerOutput(None, "", str(exc), cancelled=True)
            attempt += 1


def candidate_urls(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """Where to look for a Podman API service, in order, without repeats."""
    urls = [settings.podman_url, environ.get("CONTAINER_HOST", ""), ROOT_SOCKET]
    if environ.get("XDG_RUNTIME_DIR"):
        urls.append(USER_SOCKET.format(runtime=environ["XDG_RUNTIME_DIR"]))
    return list(dict.fromkeys(u.strip() for u in urls if u.strip()))


def connect(
    settings: Settings, log: logging.LoggerAdapter[logging.Logger],
    environ: Mapping[str, str] | None = None,
) -> ContainerEngine:
    """The Podman API when a socket answers, else the command line, else OrderFailed."""
    urls = candidate_urls(settings, os.environ if environ is None else environ)
    try:
        import podman  # noqa: F401  (optional dependency)
    except ImportError:
        log.warning("podman-py is not installed; using the podman command line")
    else:
        for url in urls:
            engine = PodmanApi.answering(url)
            if engine:
                return engine
        log.info("no Podman API service answers (tried %s); using the podman command line",
                 ", ".join(urls))
    executable = shutil.which("podman")
    if executable is None:
        raise OrderFailed(
            f"Podman is not available: no API service answers ({', '.join(urls)}) and no "
            "`podman` command is installed"
        )
    return PodmanCli(executable)
