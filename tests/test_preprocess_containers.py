"""The container run built from an order: image, mounts, arguments, safety checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from omero_adi.importing.containers import (
    ContainerRun,
    build_run,
    image_allowed,
    normalise_image,
    parse_report,
)
from omero_adi.importing.engines import PodmanApi, PodmanCli, candidate_urls
from omero_adi.pipeline import OrderFailed
from tests.podman_fixtures import make_order, settings_for

LEICA = "cellularimagingcf/convertleica-docker:v1.2.0"
CIMAGEXPRESS = "cellularimagingcf/cimagexpresstoometiff:v0.7"


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "user"
    folder.mkdir(parents=True)
    path = folder / "plate 1.tif"
    path.write_bytes(b"pixels")
    return path


def _run(tmp_path: Path, image_file: Path, **kwargs: object) -> ContainerRun:
    settings_overrides = kwargs.pop("settings", {})
    kwargs.setdefault("container", CIMAGEXPRESS)
    order = make_order([image_file], uuid_="order-1", **kwargs)  # type: ignore[arg-type]
    settings = settings_for(tmp_path, allowed_containers=[CIMAGEXPRESS, LEICA],
                            **settings_overrides)  # type: ignore[arg-type]
    return build_run(order, image_file, settings)


@pytest.mark.parametrize("name, expected", [
    (CIMAGEXPRESS, f"docker.io/{CIMAGEXPRESS}"),
    ("busybox", "docker.io/busybox"),
    ("docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ("ghcr.io/org/tool:2", "ghcr.io/org/tool:2"),
    ("localhost/adi-test-convert:latest", "localhost/adi-test-convert:latest"),
    ("registry:5000/tool", "registry:5000/tool"),
])
def test_image_gets_docker_io_only_without_registry(name: str, expected: str) -> None:
    assert normalise_image(name) == expected


@pytest.mark.parametrize("image, patterns, allowed", [
    (CIMAGEXPRESS, [CIMAGEXPRESS], True),
    (f"docker.io/{CIMAGEXPRESS}", [CIMAGEXPRESS], True),
    (CIMAGEXPRESS, [f"docker.io/{CIMAGEXPRESS}"], True),
    (LEICA, ["cellularimagingcf/*"], True),
    (LEICA, ["cellularimagingcf/convertleica-docker"], True),  # any tag
    (LEICA, ["cellularimagingcf/convertleica-docker:v1.1.0"], False),
    ("evil/cellularimagingcf:latest", ["cellularimagingcf/*"], False),
    ("ghcr.io/cellularimagingcf/tool:1", ["cellularimagingcf/*"], False),
    ("localhost/adi-test-hang:latest", ["localhost/adi-test-*"], True),
    (LEICA, [], False),
])
def test_allow_list(image: str, patterns: list[str], allowed: bool) -> None:
    assert image_allowed(image, patterns) is allowed


def test_run_matches_the_contract(tmp_path: Path, image_file: Path) -> None:
    run = _run(tmp_path, image_file, extra={"saveoption": "single", "note": "a b; rm -rf /"})
    assert run.image == f"docker.io/{CIMAGEXPRESS}"
    assert run.args == (
        "--inputfile", "/data/plate 1.tif",
        "--saveoption", "single",
        "--note", "a b; rm -rf /",  # one argument, never shell text
        "--outputfolder", "/data/.processed",
        "--altoutputfolder", "/out",
    )
    local = tmp_path / "inplace" / "order-1"
    assert [(m.source, m.target, m.read_only) for m in run.mounts] == [
        (image_file.parent, "/data", True),
        (image_file.parent / ".processed", "/data/.processed", False),
        (local, "/out", False),
    ]
    assert run.local_dir == local
    assert run.userns is None


def test_files_placeholder_is_substituted_in_extra_params(tmp_path: Path,
                                                          image_file: Path) -> None:
    run = _run(tmp_path, image_file, extra={"image_uuid": "x", "companion": "{Files}.xml"})
    assert "/data/plate 1.tif.xml" in run.args


def test_keep_id_is_passed_to_both_engines(tmp_path: Path, image_file: Path) -> None:
    run = _run(tmp_path, image_file, settings={"podman_userns_mode": "keep-id"})
    assert run.userns == "keep-id"
    argv = PodmanCli("podman").arguments(run)
    assert "--userns=keep-id" in argv
    assert argv.index("--userns=keep-id") < argv.index(run.image)
    assert argv[argv.index(run.image) + 1:] == list(run.args)
    assert PodmanApi("unix:///x").create_kwargs(run)["userns_mode"] == "keep-id"


def test_cli_mounts_originals_read_only(tmp_path: Path, image_file: Path) -> None:
    argv = PodmanCli("podman").arguments(_run(tmp_path, image_file))
    volumes = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert volumes == [
        f"{image_file.parent}:/data:ro",
        f"{image_file.parent}/.processed:/data/.processed",
        f"{tmp_path}/inplace/order-1:/out",
    ]
    assert "--userns=keep-id" not in argv


def test_container_not_allowed(tmp_path: Path, image_file: Path) -> None:
    with pytest.raises(OrderFailed, match="not allowed on this server.*allowed_containers"):
        _run(tmp_path, image_file, container="someone/miner:latest")


@pytest.mark.parametrize("key", ["bad key", "--x", "a;b", "x=y", ""])
def test_extra_param_key_must_be_an_option_name(tmp_path: Path, image_file: Path,
                                                key: str) -> None:
    with pytest.raises(OrderFailed, match="not plain option names"):
        _run(tmp_path, image_file, extra={key: "1"})


@pytest.mark.parametrize("alt", [None, "relative", "/", "/data", "/data/.processed/x",
                                 "/out/../etc", "/out:rw"])
def test_alt_folder_must_be_a_separate_absolute_folder(tmp_path: Path, image_file: Path,
                                                       alt: str | None) -> None:
    with pytest.raises(OrderFailed, match="alt_output_folder"):
        _run(tmp_path, image_file, alt=alt)


def test_uuid_is_checked_again(tmp_path: Path, image_file: Path) -> None:
    order = make_order([image_file], container=CIMAGEXPRESS, uuid_="../../etc")
    settings = settings_for(tmp_path, allowed_containers=[CIMAGEXPRESS])
    with pytest.raises(OrderFailed, match="not a valid order id"):
        build_run(order, image_file, settings)


def test_report_maps_alt_paths_locally(tmp_path: Path, image_file: Path) -> None:
    run = _run(tmp_path, image_file)
    stdout = ('working\n[{"name": "a", "full_path": "/data/.processed/a.tif", '
              '"alt_path": "/out/sub/a.tif", "keyvalues": [{"k": "v"}, {"n": 2}]}]\n\n')
    (reported,) = parse_report(stdout, run) or ()
    assert reported.local_path == run.local_dir / "sub" / "a.tif"
    assert reported.keyvalues == (("k", "v"), ("n", "2"))


@pytest.mark.parametrize("stdout", ["done\n", "", '{"alt_path": "/out/a"}', "[1, 2]",
                                    '[{"name": "a"}]'])
def test_no_report_means_whole_folder(tmp_path: Path, image_file: Path, stdout: str) -> None:
    assert parse_report(stdout, _run(tmp_path, image_file)) is None


@pytest.mark.parametrize("alt_path", ["/out/../etc/passwd", "/etc/passwd", "out/a", "/outside"])
def test_report_outside_the_alt_folder_fails(tmp_path: Path, image_file: Path,
                                             alt_path: str) -> None:
    stdout = f'[{{"name": "a", "alt_path": "{alt_path}"}}]'
    with pytest.raises(OrderFailed, match="outside its alt output folder"):
        parse_report(stdout, _run(tmp_path, image_file))


def test_socket_candidates(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, podman_url="unix:///a.sock")
    environ = {"CONTAINER_HOST": "unix:///b.sock", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert candidate_urls(settings, environ) == [
        "unix:///a.sock", "unix:///b.sock", "unix:///run/podman/podman.sock",
        "unix:///run/user/1000/podman/podman.sock",
    ]


def test_processed_data_folder_names_the_durable_copies_folder(tmp_path: Path,
                                                               image_file: Path) -> None:
    run = _run(tmp_path, image_file, settings={"processed_data_folder": "converted"})
    assert run.args[-4:] == ("--outputfolder", "/data/converted", "--altoutputfolder", "/out")
    assert (image_file.parent / "converted", "/data/converted", False) in [
        (m.source, m.target, m.read_only) for m in run.mounts]
