"""Running an external program for an order: time limit, cancellation, no shell."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable, Mapping, Sequence

#: How often a waiting runner looks at the cancellation flag.
CHECK_INTERVAL = 0.2


@dataclass(frozen=True)
class Finished:
    returncode: int
    timed_out: bool
    cancelled: bool
    seconds: float
    #: What the program wrote, as text (undecodable bytes replaced).
    stdout: str = ""
    stderr: str = ""


def run_process(
    args: Sequence[str], *, timeout: float, cancelled: threading.Event,
    on_tick: Callable[[], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Finished:
    """Run ``args`` (a list, never a shell string) in its own process group.

    The whole group is killed when ``timeout`` passes or ``cancelled`` is set,
    so a Java importer's children go too. Its output is collected in temporary
    files (a chatty program never blocks on a full pipe) and returned.
    ``on_tick`` is called every :data:`CHECK_INTERVAL` while it runs; ``env``
    is added to this process's environment.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            list(args), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **env} if env else None,
        )
        timed_out = was_cancelled = False
        while True:
            try:
                process.wait(timeout=CHECK_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                if on_tick is not None:
                    _tick(on_tick, process)
                timed_out = time.monotonic() - started > timeout
                was_cancelled = cancelled.is_set()
                if timed_out or was_cancelled:
                    _kill_group(process)
                    process.wait()
                    break
        seconds = time.monotonic() - started
        return Finished(process.returncode, timed_out, was_cancelled, seconds,
                        _text(out), _text(err))


def _tick(on_tick: Callable[[], None], process: subprocess.Popen[bytes]) -> None:
    """``on_tick``; should it fail, the program must not outlive the run."""
    try:
        on_tick()
    except BaseException:
        _kill_group(process)
        process.wait()
        raise


def _text(output: IO[bytes]) -> str:
    output.seek(0)
    return output.read().decode("utf-8", "replace")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
