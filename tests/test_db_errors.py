"""A wrong order database, as a new site gets it wrong: the real PostgreSQL
server says why, and the daemon stops at once on what waiting cannot fix,
waits (with backoff) on what it can, and leaves on Ctrl-C with one line.

Everything runs ``omero-adi`` as a real process against real servers: the
shared local one (trust authentication, so no password can be refused
there) and, for a refused password, a PostgreSQL cluster of this module's
own with scram-sha-256 authentication.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from omero_adi.store.migrate import ADVISORY_LOCK_KEY
from tests.helpers import free_port, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "right-password"


def omero_adi(*args: str, url: str, cwd: Path, **options) -> subprocess.Popen[str]:
    env = {**os.environ, "INGEST_TRACKING_DB_URL": url}
    return subprocess.Popen([sys.executable, "-m", "omero_adi", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """Exit status and standard error; a process still running after ``timeout``
    (retrying for ever, say) is killed and fails the test."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"omero-adi still running after {timeout}s")
    return process.returncode, err


@pytest.fixture(scope="module")
def scram_server() -> Iterator[str]:
    """A PostgreSQL cluster that asks for passwords (role ``adi``); its URL."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN}")
    # Not under pytest's root-only temporary folder: the server runs as postgres.
    home = Path(tempfile.mkdtemp(prefix="adi-scram-"))
    (home / "pw").write_text(PASSWORD + "\n")
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(home, "postgres")
        shutil.chown(home / "pw", "postgres")
    port = free_port()
    data = home / "data"
    subprocess.run([*run_as, str(PG_BIN / "initdb"), "-D", str(data), "-A", "scram-sha-256",
                    "-U", "adi", f"--pwfile={home / 'pw'}", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l",
                    str(home / "log"), "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1",
                    "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://adi:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize(("part", "name", "reason"), [
    ("database", "adi_no_such_db", 'database "adi_no_such_db" does not exist'),
    ("username", "adi_no_such_role", 'role "adi_no_such_role" does not exist'),
])
def test_a_database_or_role_that_does_not_exist_stops_the_daemon_at_once(
    pg_admin_url: str, tmp_path: Path, part: str, name: str, reason: str
) -> None:
    admin = make_url(pg_admin_url)
    wrong = admin.set(database=name) if part == "database" else admin.set(username=name)
    url = wrong.render_as_string(False)
    code, err = finish(omero_adi("run", url=url, cwd=tmp_path))
    assert code == 1
    assert f"cannot use the order database {url}: {reason}" in err
    assert "retrying" not in err and "Traceback" not in err


def test_a_refused_password_stops_the_daemon_with_the_password_masked(
    scram_server: str, tmp_path: Path
) -> None:
    good = sa.create_engine(scram_server.replace("postgresql://", "postgresql+psycopg2://"))
    with good.connect() as connection:  # the right password works: only the wrong one fails
        assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    good.dispose()
    wrong = scram_server.replace(PASSWORD, "wrong-password")
    code, err = finish(omero_adi("run", url=wrong, cwd=tmp_path))
    assert code == 1
    masked = wrong.replace("wrong-password", "***")
    assert f'cannot use the order database {masked}: password authentication failed for user "adi"' in err
    assert "wrong-password" not in err and "retrying" not in err


def test_check_says_the_cause(pg_admin_url: str, tmp_path: Path) -> None:
    url = make_url(pg_admin_url).set(database="adi_no_such_db").render_as_string(False)
    process = omero_adi("check", url=url, cwd=tmp_path)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    [line] = [line for line in out.splitlines() if line.startswith("FAIL database:")]
    assert line == f'FAIL database: cannot use {url}: database "adi_no_such_db" does not exist'


def test_a_refused_connection_is_retried_with_backoff_and_ctrl_c_leaves_cleanly(
    tmp_path: Path
) -> None:
    url = f"postgresql://adi:secret@127.0.0.1:{free_port()}/orders"  # nobody listens there
    process = omero_adi("run", url=url, cwd=tmp_path)
    log = tmp_path / "logs" / "app.logs"
    wait_for(lambda: log.exists() and log.read_text().count("retrying in") >= 3, timeout=30,
             what="three retries")
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.splitlines()[-1] == "omero-adi: interrupted"
    retries = [line for line in log.read_text().splitlines() if "retrying in" in line]
    assert all("reaching the order database postgresql://adi:***@127.0.0.1" in line
               and "Connection refused" in line for line in retries)
    delays = [float(line.split("retrying in ")[1].split("s")[0]) for line in retries]
    assert delays[:3] == sorted(delays[:3]) and delays[2] > delays[0]  # backing off


def test_ctrl_c_while_waiting_for_another_migrator_leaves_cleanly(
    make_pg_database, tmp_path: Path
) -> None:
    url = make_pg_database()
    holder = sa.create_engine(url)
    with holder.connect() as connection:  # another process is migrating
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
        connection.commit()
        err_file = tmp_path / "err.txt"
        with err_file.open("w") as err:
            process = subprocess.Popen([sys.executable, "-m", "omero_adi", "migrate"],
                                       cwd=tmp_path, stderr=err, stdout=subprocess.DEVNULL,
                                       env={**os.environ, "INGEST_TRACKING_DB_URL": url})
        wait_for(lambda: "another process is migrating" in err_file.read_text(), timeout=60,
                 what="the wait for the lock")
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=30) == 130
        finally:
            process.kill()
    holder.dispose()
    assert err_file.read_text().splitlines()[-1] == "omero-adi: interrupted"
    assert "Traceback" not in err_file.read_text()


@pytest.mark.parametrize("url", ["mysql://adi:secret@db/orders", "oracle://db/orders"])
def test_an_unsupported_scheme_gets_one_line_naming_the_supported_ones(
    url: str, tmp_path: Path
) -> None:
    for command in ("status", "check", "migrate"):
        process = omero_adi(command, url=url, cwd=tmp_path)
        out, err = process.communicate(timeout=120)
        text = (out + err).strip()
        assert "Traceback" not in text and "secret" not in text
        scheme = url.split(":")[0]
        expected = (f"database URL scheme '{scheme}://' is not supported; "
                    "use postgresql:// (or postgres://) or sqlite:///")
        assert expected in text, command
        if command != "check":
            assert err.strip() == f"omero-adi: settings error: {expected}"


def test_postgres_scheme_works_as_postgresql(make_pg_database, tmp_path: Path) -> None:
    url = make_pg_database().replace("postgresql+psycopg2://", "postgres://")
    process = omero_adi("migrate", url=url, cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out.startswith(url)
    assert "created omero-adi's tables" in out
