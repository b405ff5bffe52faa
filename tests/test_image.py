"""The image, built with scripts/build-image and run the way docker-compose.yml runs
the omeroadi service: its user, privileges, environment and mounts, with the
settings from a mounted config folder. What this machine lacks is replaced: the
order database is the host's PostgreSQL (``--network=host``); OMERO is either
absent (its port closed: orders end ``Import Failed``, OMERO unreachable) or the
OMERO double on the host, which registers a Zarr order (no Java importer here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from omero_adi.store.migrate import VERSION_TABLE, head_revision
from tests.helpers import free_port, insert_order, stages, wait_for
from tests.podman_fixtures import ALLOW_PATTERN, podman_images, podman_ready  # noqa: F401
from tests.test_zarr_meta import new_store, write_image

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "omero-adi:local"
SHUTDOWN_TIMEOUT = 10
SECRET = f"image-test-secret-{uuid.uuid4().hex[:8]}"
FINAL = ("Import Completed", "Import Failed")
#: What the first build may take on a fresh machine (about 5 minutes measured).
BUILD_TIMEOUT = 1800


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def compose_service() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(compose["services"]["omeroadi"])


def compose_run_flags() -> list[str]:
    """``podman run`` flags for exactly the user and privileges the compose file grants."""
    service = compose_service()
    flags = [f"--user={service['user']}"]
    if service.get("privileged"):
        flags.append("--privileged")
    flags += [f"--device={device}" for device in service.get("devices", [])]
    flags += [f"--security-opt={option}" for option in service.get("security_opt", [])]
    flags += [f"--cap-add={cap}" for cap in service.get("cap_add", [])]
    return flags


@pytest.fixture(scope="module")
def image(podman_ready: str) -> str:
    done = subprocess.run([str(ROOT / "scripts" / "build-image"), "--skip-jars"],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, done.stderr[-5000:]
    return IMAGE


@dataclass
class Site:
    """The host folders a site mounts, and the order database."""

    root: Path
    port: int
    db_url: str
    engine: sa.Engine

    def path(self, name: str) -> Path:
        return self.root / name


def make_site(root: Path, admin_url: str, **settings: Any) -> Site:
    """Folders as a site mounts them, with config/settings.yml from deploy/ plus
    ``settings``, and a database URL with a password to look for."""
    for name in ("config", "logs", "data/samples", "omero/ManagedRepository",
                 "omero/OMERO_inplace", "containers"):
        (root / name).mkdir(parents=True)
    port = free_port()
    values = yaml.safe_load((ROOT / "deploy" / "settings.yml").read_text())
    values.update({
        "metrics_port": port, "shutdown_timeout": SHUTDOWN_TIMEOUT,
        "omero_connect_retries": 1, "allowed_containers": [ALLOW_PATTERN],
        "sample_group": "lab", "sample_user": "alice", "sample_parent_id": "1", **settings,
    })
    (root / "config" / "settings.yml").write_text(yaml.safe_dump(values))
    subprocess.run(["chown", "-R", "1000:1000", str(root)], check=True)
    # Trust authentication ignores the password: it is there to be looked for.
    db_url = make_url(admin_url).set(password=SECRET).render_as_string(hide_password=False)
    return Site(root, port, db_url, sa.create_engine(admin_url))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Site]:
    made = make_site(tmp_path_factory.mktemp("site"), pg_url)
    yield made
    made.engine.dispose()


def run_daemon(image: str, site: Site, *extra: str, omero: dict[str, str] | None = None) -> str:
    """Start the daemon container as compose does; its name. Without ``omero``
    (host, port, user, password), OMERO's port is closed."""
    service = compose_service()
    environment = {
        "INGEST_TRACKING_DB_URL": site.db_url, "OMERO_HOST": "127.0.0.1",
        "OMERO_PORT": str(free_port()), "OMERO_USER": "root", "OMERO_PASSWORD": SECRET,
        "PODMAN_USERNS_MODE": service["environment"]["PODMAN_USERNS_MODE"], **(omero or {}),
    }
    assert set(environment) == set(service["environment"])
    name = f"adi-image-test-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--name", name, "--network=host", *compose_run_flags(),
           *(f"--env={key}={value}" for key, value in environment.items()),
           f"--volume={site.path('config')}:/auto-importer/config:ro",
           f"--volume={site.path('logs')}:/auto-importer/logs",
           f"--volume={site.path('data')}:/data",
           f"--volume={site.path('omero')}:/OMERO",
           f"--volume={site.path('containers')}:/home/adi/.local/share/containers",
           *extra, image)
    return name


def state(name: str) -> dict[str, Any]:
    return dict(json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout))


def healthz(name: str, port: int) -> tuple[int, dict[str, Any]] | None:
    """The /healthz answer, None while nothing listens; fails if the container died."""
    if not state(name)["Running"]:
        logs = podman("logs", name, check=False)
        raise AssertionError(f"the container stopped:\n{(logs.stdout + logs.stderr)[-4000:]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as answer:
        return answer.code, json.loads(answer.read())
    except OSError:
        return None


def started(name: str, port: int) -> tuple[int, dict[str, Any]]:
    """/healthz once the daemon's workers run (the endpoint answers a moment before)."""
    def up() -> tuple[int, dict[str, Any]] | None:
        answer = healthz(name, port)
        return answer if answer and answer[1]["checks"]["workers"]["ok"] else None
    return wait_for(up, timeout=180, what=f"the daemon in {name} to start")


@pytest.fixture(scope="module")
def daemon(image: str, site: Site) -> Iterator[str]:
    name = run_daemon(image, site)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def final_stage(site: Site, order: str, timeout: float) -> list[tuple[str, str | None]]:
    return wait_for(lambda: (history := stages(site.engine, order)) and history[-1][0] in FINAL
                    and history, timeout=timeout, what=f"order {order} to finish")


def test_the_daemon_migrates_and_answers_healthz_on_the_configured_port(daemon, site) -> None:
    status, report = started(daemon, site.port)  # the port of the mounted settings
    assert (status, report["status"]) == (503, "failing"), report  # no OMERO here
    checks = report["checks"]
    assert checks["database"]["ok"] and checks["loop"]["ok"] and checks["workers"]["ok"]
    assert not checks["omero"]["ok"] and "unreachable" in checks["omero"]["detail"]
    with site.engine.connect() as connection:
        version = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
        assert version.scalar_one() == head_revision()


def test_it_runs_as_1000_from_the_installed_package_in_the_earlier_layout(daemon, site) -> None:
    assert podman("exec", daemon, "id", "-u").stdout.split() == ["1000"]
    assert podman("exec", daemon, "id", "-g").stdout.split() == ["1000"]
    status = podman("exec", daemon, "cat", "/proc/1/status", "/proc/1/cmdline").stdout
    assert re.search(r"^Uid:\s+1000\s+1000\s+1000\s+1000$", status, re.M)
    assert re.search(r"^Gid:\s+1000\s+1000\s+1000\s+1000$", status, re.M)
    assert status.endswith("python\0-m\0omero_adi.main\0")
    where = podman("exec", daemon, "python", "-c",
                   "import os, omero_adi.migrations as m; print(os.getcwd(), m.__file__)")
    cwd, migrations = where.stdout.split()
    assert cwd == "/auto-importer"
    assert migrations.startswith("/opt/venv/lib/python3.11/site-packages/omero_adi/")
    listing = podman("exec", daemon, "ls", "/auto-importer", "/auto-importer/tests").stdout
    assert "system_check.py" in listing and "omero_adi" not in listing


def test_the_image_healthcheck_runs_the_probe(daemon, site, image) -> None:
    """Kept in the image (Docker's format), asking /healthz: unhealthy without OMERO."""
    check = json.loads(podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}",
                              image).stdout)
    assert check["Test"] == ["CMD", "python", "-m", "omero_adi.metrics"]
    started(daemon, site.port)
    done = podman("healthcheck", "run", daemon, check=False)
    assert (done.returncode, done.stdout.strip()) == (1, "unhealthy"), done.stderr


def test_a_plain_sql_order_ends_import_failed_with_omero_unreachable(daemon, site) -> None:
    started(daemon, site.port)
    sample = site.path("data") / "samples" / "sample.tif"
    sample.write_bytes(b"not really a tiff")
    os.chown(sample, 1000, 1000)
    order = str(uuid.uuid4())
    insert_order(site.engine, order, ["/data/samples/sample.tif"])
    history = final_stage(site, order, timeout=120)
    assert [stage for stage, _ in history] == ["Import Pending", "Import Started", "Import Failed"]
    assert "unreachable" in (history[-1][1] or "").lower(), history
    logs = site.path("logs") / "app.logs"
    assert logs.stat().st_uid == 1000
    text = logs.read_text()
    assert order in text and SECRET not in text


@pytest.mark.parametrize("script", ["system_check.py", "t_main.py"])
def test_the_health_checks_run_inside_with_the_shipped_sample(daemon, site, script) -> None:
    """``python tests/<script>`` as sites run it: config/settings.yml of the working
    directory, the sample /auto-importer/tests/Barbie.tif; the order fails (no OMERO)."""
    started(daemon, site.port)
    done = podman("exec", daemon, "python", f"tests/{script}", "--timeout", "120",
                  timeout=180, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # 1: the order failed
    assert re.search(r"[0-9a-f-]{36}.*/data/omero-adi-system-check/.+/Barbie\.tif",
                     done.stdout), done.stdout
    assert "Import Failed" in done.stdout and "unreachable" in done.stdout.lower()


def load_into_the_container(daemon: str, site: Site, image: str) -> None:
    """``podman load`` a host image into the container user's own Podman storage."""
    archive = site.path("data") / "image.tar"
    podman("save", "--output", str(archive), image)
    archive.chmod(0o644)
    podman("exec", daemon, "podman", "load", "--input", "/data/image.tar", timeout=300)
    archive.unlink()


def test_a_preprocessing_order_runs_its_container_with_rootless_podman_inside(
    daemon, site, podman_images
) -> None:
    """The container runs with the compose file's privileges (no --privileged, no
    /dev/fuse): Podman inside converts, then the import fails (no OMERO)."""
    started(daemon, site.port)
    load_into_the_container(daemon, site, podman_images["convert"])
    folder = site.path("data") / "pre"
    folder.mkdir()
    (folder / "input.tif").write_bytes(b"pixels")
    subprocess.run(["chown", "-R", "1000:1000", str(folder)], check=True)
    with site.engine.begin() as connection:
        pre = connection.execute(sa.text(
            "INSERT INTO imports_preprocessing (container, input_file, output_folder, "
            "alt_output_folder, extra_params) VALUES (:c, '{Files}', '/data', '/out', "
            "CAST('{}' AS JSON)) RETURNING id"), {"c": podman_images["convert"]}).scalar_one()
    order = str(uuid.uuid4())
    insert_order(site.engine, order, ["/data/pre/input.tif"], pre=pre)
    history = final_stage(site, order, timeout=300)
    assert [stage for stage, _ in history] == [
        "Import Pending", "Import Started", "Import Preprocessing", "Import Failed"], history
    assert "unreachable" in (history[-1][1] or "").lower(), history
    converted = folder / ".processed" / "input.converted.tif"
    assert converted.read_bytes() == b"converted pixels"
    assert converted.stat().st_uid == 1000  # --userns=keep-id
    assert (folder / "input.tif").read_bytes() == b"pixels"


def nested_run(image: str, site: Site, *flags: str) -> subprocess.CompletedProcess[str]:
    """A container as uid 1000 with only ``flags`` that loads the test converter into
    its own Podman and runs it once."""
    script = ("podman load --quiet --input /data/convert.tar && "
              "podman run --rm --userns=keep-id localhost/adi-test-convert:latest "
              "--inputfile /etc/hostname --outputfolder /tmp/out --altoutputfolder /tmp/alt")
    return podman("run", "--rm", "--user=1000:1000", *flags,
                  f"--volume={site.path('data')}:/data:ro", "--entrypoint=bash", image,
                  "-c", script, timeout=300, check=False)


def test_podman_inside_needs_no_more_than_unmasked_system_paths(image, site, podman_images) -> None:
    """Under Podman the least privilege is ``systempaths=unconfined`` alone: default
    capabilities and seccomp profile, no device. Without it, /proc cannot be mounted."""
    archive = site.path("data") / "convert.tar"
    podman("save", "--output", str(archive), podman_images["convert"])
    archive.chmod(0o644)
    try:
        done = nested_run(image, site, "--security-opt=systempaths=unconfined")
        assert done.returncode == 0, done.stderr[-3000:]
        assert '"name": "hostname.converted.tif"' in done.stdout
        refused = nested_run(image, site)
        assert refused.returncode != 0
        assert 'error mounting "proc"' in refused.stderr, refused.stderr[-3000:]
    finally:
        archive.unlink()


def test_sigterm_stops_the_daemon_within_shutdown_timeout(daemon, site) -> None:
    """Last of the tests that use the running daemon: it stops it, as compose stop does."""
    started(daemon, site.port)
    signalled = time.monotonic()
    podman("kill", "--signal", "TERM", daemon)
    wait_for(lambda: not state(daemon)["Running"], timeout=SHUTDOWN_TIMEOUT + 20,
             what="the container to stop")
    assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT
    assert state(daemon)["ExitCode"] == 0
    assert podman("logs", daemon).stderr.splitlines()[-1].endswith(" stopped")


def test_a_zarr_order_is_registered_through_the_omero_double(
    image, tmp_path, make_pg_database, omero_double
) -> None:
    """With the OMERO double on the host (OMERO.server's Ice services), a Zarr order
    (registered, no Java importer needed) ends Import Completed, and a TIFF order
    fails saying that the importer's jars are missing and how to add them. The data
    folder is mounted at its own path: server and daemon see one path."""
    own = make_site(tmp_path / "site", make_pg_database(), use_register_zarr=True,
                    base_dir=str(tmp_path / "site" / "data"))
    data = own.path("data")
    write_image(new_store(data / "sample.zarr", 2), shape=(1, 2, 1, 16, 16))
    subprocess.run(["chown", "-R", "1000:1000", str(data)], check=True)
    omero = {key: omero_double.env[key]
             for key in ("OMERO_HOST", "OMERO_PORT", "OMERO_USER", "OMERO_PASSWORD")}
    name = run_daemon(image, own, f"--volume={data}:{data}", omero=omero)
    try:
        status, report = started(name, own.port)
        assert status == 200, report
        order = str(uuid.uuid4())
        insert_order(own.engine, order, [str(data / "sample.zarr")], group="Demo",
                     user="researcher", dest="151")
        history = final_stage(own, order, timeout=180)
        assert [stage for stage, _ in history] == [
            "Import Pending", "Import Started", "Import Completed"], history
        assert len(omero_double.state()["datasets"]["151"]["children"]) == 1
        # A TIFF needs the Java importer, whose jars this image lacks: the failure says so.
        shutil.copy(ROOT / "tests" / "Barbie.tif", data / "Barbie.tif")
        tiff = str(uuid.uuid4())
        insert_order(own.engine, tiff, [str(data / "Barbie.tif")], group="Demo",
                     user="researcher", dest="151")
        stage, description = final_stage(own, tiff, timeout=180)[-1]
        assert stage == "Import Failed"
        assert "The OMERO.java importer jars are missing" in (description or ""), description
        assert "OMERO_JARS=skip" in (description or "")
    finally:
        print(podman("logs", name, check=False).stderr[-6000:])  # shown if the test failed
        podman("rm", "--force", "--time", "0", name, check=False)
        own.engine.dispose()


def test_no_secret_in_any_layer_or_the_image_config(image, daemon) -> None:
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config = podman("image", "inspect", image).stdout
    assert "pip install --no-deps /tmp/omero-adi" in history
    assert SECRET in podman("container", "inspect", daemon).stdout  # the search finds it there
    for text in (history, config):
        assert SECRET not in text
        assert not re.search(r"(?i)(password|secret|token)[\w]*=\S", text), text
        assert not re.search(r"://[^/@\s:]+:[^/@\s]+@", text), text
    found = podman("run", "--rm", "--entrypoint", "find", image, "/", "-xdev",
                   "(", "-name", ".env", "-o", "-name", "*.pem", "-path", "/home/*", ")",
                   check=False).stdout
    assert found == ""


def test_an_image_without_jars_says_so_and_how_to_add_them(image) -> None:
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    assert labels["org.omero-adi.omero-jars"] == "skip"
    note = podman("run", "--rm", "--entrypoint", "python", image, "-c",
                  "from omero_adi.importing.jars import missing_jars_note; "
                  "print(missing_jars_note())").stdout
    assert "/opt/omero/cache/jars" in note and "OMERO_JARS=skip" in note
