"""Real preprocessing containers, through the Podman API service and the podman CLI."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from omero_adi.importing.engines import ContainerEngine, PodmanApi, PodmanCli, connect
from omero_adi.importing.preprocess import (
    STAGE_PREPROCESSING,
    Preprocessed,
    preprocess,
)
from omero_adi.importing.results import ImportItem
from omero_adi.pipeline import OrderFailed
from tests.podman_fixtures import (  # noqa: F401  (fixtures)
    Recorded,
    digests,
    make_context,
    make_order,
    podman_images,
    podman_ready,
    podman_service,
    settings_for,
)


@pytest.fixture(params=["api", "cli"])
def engine(request: pytest.FixtureRequest, podman_ready: str) -> ContainerEngine:  # noqa: F811
    if request.param == "cli":
        return PodmanCli(podman_ready)
    url = request.getfixturevalue("podman_service")
    api = PodmanApi.answering(url)
    assert api is not None, f"the Podman API service at {url} does not answer"
    return api


@pytest.fixture
def originals(tmp_path: Path) -> list[Path]:
    """Two images in two folders of the shared storage."""
    files = []
    for folder, name, content in [("a", "one.tif", b"first image"),
                                  ("b", "two.tif", b"second image")]:
        directory = tmp_path / "data" / folder
        directory.mkdir(parents=True)
        (directory / name).write_bytes(content)
        (directory / "notes.txt").write_text("untouched")
        files.append(directory / name)
    return files


def _preprocess(tmp_path: Path, files: list[Path], image: str, engine: ContainerEngine,
                **kwargs: object) -> tuple[Recorded, Preprocessed]:
    settings_overrides = kwargs.pop("settings", {})
    order = make_order(files, container=image, **kwargs)  # type: ignore[arg-type]
    settings = settings_for(tmp_path, **settings_overrides)  # type: ignore[arg-type]
    recorded = make_context(order, settings)
    return recorded, preprocess(recorded.ctx, engine)


def _paths(result: Preprocessed) -> tuple[Path, ...]:
    return tuple(output.path for output in result.to_import)


def _data_digests(tmp_path: Path) -> dict[str, str]:
    return digests(tmp_path / "data")


def test_converter_writes_both_copies_and_reports_keyvalues(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine, caplog: pytest.LogCaptureFixture,
) -> None:
    before = _data_digests(tmp_path)
    caplog.set_level("INFO")
    recorded, result = _preprocess(tmp_path, originals, podman_images["convert"], engine,
                                   extra={"saveoption": "single"})
    assert [stage for stage, _ in recorded.stages] == [STAGE_PREPROCESSING]
    local = result.tmp_dir
    assert local == tmp_path / "inplace" / recorded.ctx.order.uuid
    assert _paths(result) == (local / "one.converted.tif", local / "two.converted.tif")
    for original, output in zip(originals, result.outputs):
        durable = original.parent / ".processed" / output.path.name
        expected = b"converted " + original.read_bytes()
        assert durable.read_bytes() == output.path.read_bytes() == expected
        assert output.origin == original
        assert output.keyvalues == {"processing_output_source": original.name,
                                    "processing_output_saveoption": "single"}
        assert result.durable_for(output.path) == durable
    assert _data_digests(tmp_path) == before
    assert "[one.tif stderr] converting /data/one.tif" in caplog.text
    assert "[two.tif stdout] progress: done" in caplog.text


def test_folder_outputs_map_every_file_to_its_durable_copy(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine,
) -> None:
    _, result = _preprocess(tmp_path, originals[:1], podman_images["convert"], engine,
                            extra={"saveoption": "folder"})
    plate = result.tmp_dir / "one.plate"
    assert _paths(result) == (plate,)
    assert result.outputs[0].keyvalues["processing_output_saveoption"] == "folder"
    durable = originals[0].parent / ".processed" / "one.plate" / "A2.tif"
    assert result.durable_for(plate / "A2.tif") == durable


def test_without_json_the_whole_local_folder_is_imported(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    _, result = _preprocess(tmp_path, originals, podman_images["convert"], engine,
                            extra={"mode": "nojson"})
    assert result.to_import == (ImportItem(result.tmp_dir, originals[0]),)
    assert result.durable_for(result.tmp_dir / "two.converted.tif") == (
        originals[1].parent / ".processed" / "two.converted.tif")
    assert "importing the whole local folder" in caplog.text


def test_non_zero_exit_fails_with_code_and_output(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine,
) -> None:
    with pytest.raises(OrderFailed) as failure:
        _preprocess(tmp_path, originals, podman_images["fail"], engine)
    message = str(failure.value)
    assert "exited with code 3" in message
    assert "conversion failed: unsupported file" in message
    assert "one.tif" in message
    assert not (tmp_path / "inplace").exists() or not any((tmp_path / "inplace").iterdir())


def test_hung_container_is_killed_at_the_time_limit(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine, podman_ready: str,  # noqa: F811
) -> None:
    started = time.monotonic()
    with pytest.raises(OrderFailed, match=r"killed after the time limit of 2 s: starting"):
        _preprocess(tmp_path, originals, podman_images["hang"], engine,
                    settings={"preprocessing_timeout": 2.0})
    assert time.monotonic() - started < 30
    _assert_no_test_containers(podman_ready)


def test_cancellation_stops_the_container(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine, podman_ready: str,  # noqa: F811
) -> None:
    order = make_order(originals, container=podman_images["hang"])
    recorded = make_context(order, settings_for(tmp_path))
    threading.Timer(2.0, recorded.ctx.cancelled.set).start()
    with pytest.raises(OrderFailed, match="shutting down"):
        preprocess(recorded.ctx, engine)
    _assert_no_test_containers(podman_ready)


def _assert_no_test_containers(podman: str) -> None:
    listed = subprocess.run([podman, "ps", "-a", "--format", "{{.Names}}"],
                            capture_output=True, text=True, check=True).stdout
    assert not [name for name in listed.split() if name.startswith("adi-")], listed


def test_misbehaving_container_cannot_touch_originals_or_the_host(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine,
) -> None:
    before = _data_digests(tmp_path)
    _, result = _preprocess(tmp_path, originals[:1], podman_images["escape"], engine)
    assert _data_digests(tmp_path) == before
    assert not (originals[0].parent / "planted.txt").exists()
    assert not Path("/escaped").exists()
    assert not Path("/etc/escaped").exists()
    assert _paths(result) == (result.tmp_dir / "passwd.txt",)


def test_reported_path_outside_the_alt_folder_fails(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine,
) -> None:
    with pytest.raises(OrderFailed, match="outside its alt output folder"):
        _preprocess(tmp_path, originals, podman_images["escape"], engine,
                    extra={"mode": "altpath"})


def test_keep_id_as_root_fails_clearly(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine,
) -> None:
    with pytest.raises(OrderFailed, match="keep-id"):
        _preprocess(tmp_path, originals, podman_images["convert"], engine,
                    settings={"podman_userns_mode": "keep-id"})


def test_disallowed_image_fails_before_anything_runs(
    tmp_path: Path, originals: list[Path], podman_images: dict[str, str],  # noqa: F811
    engine: ContainerEngine,
) -> None:
    order = make_order(originals, container=podman_images["convert"])
    settings = settings_for(tmp_path, allowed_containers=["cellularimagingcf/*"])
    recorded = make_context(order, settings)
    with pytest.raises(OrderFailed, match="not allowed"):
        preprocess(recorded.ctx, engine)
    assert recorded.stages == []
    assert not (tmp_path / "inplace").exists()
    assert not (originals[0].parent / ".processed").exists()


def test_connect_prefers_the_api_and_falls_back_to_the_cli(
    tmp_path: Path, podman_service: str, podman_ready: str,  # noqa: F811
) -> None:
    order = make_order([tmp_path], container="x")
    log = make_context(order, settings_for(tmp_path)).ctx.log
    api = connect(settings_for(tmp_path, podman_url=podman_service), log, environ={})
    assert isinstance(api, PodmanApi)
    missing = f"unix://{tmp_path}/none.sock"
    cli = connect(settings_for(tmp_path, podman_url=missing), log, environ={})
    assert isinstance(cli, PodmanCli) and cli.executable == podman_ready

