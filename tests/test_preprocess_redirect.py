"""Link redirection after an in-place import of preprocessed copies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pytest

from omero_adi.importing.engines import PodmanCli
from omero_adi.importing.preprocess import (
    Preprocessed,
    fileset_dir,
    import_preprocessed,
    redirect_filesets,
)
from omero_adi.importing.redirect import redirect_links
from omero_adi.importing.results import (
    ImportedFileset,
    ImportFailed,
    ImportItem,
    ImportResult,
)
from omero_adi.omero.boundary import FilesetInfo
from omero_adi.pipeline import OrderContext, OrderFailed
from tests.podman_fixtures import (  # noqa: F401  (fixtures)
    digests,
    make_context,
    make_order,
    podman_images,
    podman_ready,
    settings_for,
)


def _import_in_place(managed: Path, paths: tuple[Path, ...]) -> list[str]:
    """What ``--transfer=ln_s`` leaves behind: one folder of links per fileset."""
    prefixes = []
    for number, path in enumerate(paths):
        prefix = f"alice_2/2024-05/0{number + 1}/10-00-00.000"
        folder = managed / prefix
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            link = folder / (file.relative_to(path.parent))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file)
        prefixes.append(prefix)
    return prefixes


def _targets(managed: Path) -> dict[str, str]:
    return {
        str(link.relative_to(managed)): os.readlink(link)
        for link in sorted(managed.rglob("*")) if link.is_symlink()
    }


class FakeImporter:
    """``import_items`` as ``--transfer=ln_s`` would do it: links in ManagedRepository.

    ``fail_after`` imports only that many items and then raises ImportFailed;
    ``refuse`` raises OrderFailed before importing anything.
    """

    def __init__(self, fail_after: int | None = None, refuse: bool = False):
        self.fail_after, self.refuse = fail_after, refuse
        self.items: list[ImportItem] = []

    def __call__(self, ctx: OrderContext, items: Sequence[ImportItem]) -> ImportResult:
        self.items = list(items)
        if self.refuse:
            raise OrderFailed("user alice is not in group lab; nothing was imported")
        chosen = items if self.fail_after is None else items[: self.fail_after]
        managed = Path(ctx.settings.managed_repository)
        prefixes = _import_in_place(managed, tuple(item.path for item in chosen))
        imported = [
            ImportedFileset(item, FilesetInfo(100 + n, prefix, (item.path,), (200 + n,), ()))
            for n, (item, prefix) in enumerate(zip(chosen, prefixes))
        ]
        if self.fail_after is not None:
            raise ImportFailed("1 of 2 paths failed to import", imported)
        return ImportResult(tuple(imported))


def _two_files(tmp_path: Path) -> list[Path]:
    files = []
    for folder in ("a", "b"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        files.append(tmp_path / "data" / folder / f"{folder}.tif")
        files[-1].write_bytes(folder.encode() * 100)
    return files


@pytest.mark.parametrize("destination_type, saveoption", [("Dataset", "single"),
                                                         ("Screen", "folder")])
def test_links_end_in_processed_and_the_local_copy_goes(
    tmp_path: Path, podman_images: dict[str, str], podman_ready: str,  # noqa: F811
    destination_type: str, saveoption: str,
) -> None:
    files = _two_files(tmp_path)
    before = digests(tmp_path / "data")
    order = make_order(files, container=podman_images["convert"],
                       destination_type=destination_type, extra={"saveoption": saveoption})
    recorded = make_context(order, settings_for(tmp_path))
    importer = FakeImporter()

    result = import_preprocessed(recorded.ctx, importer, PodmanCli(podman_ready))

    local = tmp_path / "inplace" / order.uuid
    suffix = ".converted.tif" if saveoption == "single" else ".plate"
    assert [(i.path, i.origin) for i in importer.items] == [
        (local / f"{f.stem}{suffix}", f) for f in files
    ]
    assert importer.items[0].keyvalues == {"processing_output_source": "a.tif",
                                           "processing_output_saveoption": saveoption}
    assert len(result.filesets) == 2
    targets = _targets(Path(recorded.ctx.settings.managed_repository))
    names = (["{0}.converted.tif"] if saveoption == "single"
             else ["{0}.plate/A1.tif", "{0}.plate/A2.tif"])
    assert sorted(targets.values()) == sorted(
        str(tmp_path / "data" / folder / ".processed" / name.format(folder))
        for folder in "ab" for name in names
    )
    assert not local.exists()
    assert digests(tmp_path / "data") == before


def test_partial_import_redirects_what_was_imported(
    tmp_path: Path, podman_images: dict[str, str], podman_ready: str,  # noqa: F811
) -> None:
    order = make_order(_two_files(tmp_path), container=podman_images["convert"])
    recorded = make_context(order, settings_for(tmp_path))
    with pytest.raises(ImportFailed, match="1 of 2 paths failed"):
        import_preprocessed(recorded.ctx, FakeImporter(fail_after=1), PodmanCli(podman_ready))
    targets = _targets(Path(recorded.ctx.settings.managed_repository))
    assert list(targets.values()) == [str(tmp_path / "data/a/.processed/a.converted.tif")]
    assert not (tmp_path / "inplace" / order.uuid).exists()


def test_nothing_imported_removes_the_local_copy(
    tmp_path: Path, podman_images: dict[str, str], podman_ready: str,  # noqa: F811
) -> None:
    order = make_order(_two_files(tmp_path), container=podman_images["convert"])
    recorded = make_context(order, settings_for(tmp_path))
    with pytest.raises(OrderFailed, match="not in group"):
        import_preprocessed(recorded.ctx, FakeImporter(refuse=True), PodmanCli(podman_ready))
    assert not (tmp_path / "inplace" / order.uuid).exists()


def _local_copy(tmp_path: Path, names: list[str]) -> tuple[Preprocessed, Path, list[str]]:
    """A local folder with copies, their durable twins in one original folder, and links."""
    tmp_dir, original = tmp_path / "inplace" / "order", tmp_path / "data"
    for name in names:
        for folder in (tmp_dir, original / ".processed"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(name)
    sources = {tmp_dir / name: original / "raw.lif" for name in names}
    result = Preprocessed(tmp_dir, (), sources, ".processed")
    managed = tmp_path / "ManagedRepository"
    prefixes = _import_in_place(managed, tuple(tmp_dir / n for n in names))
    return result, managed, prefixes


def test_missing_durable_copy_switches_nothing_for_that_link(tmp_path: Path) -> None:
    result, managed, prefixes = _local_copy(tmp_path, ["x.tif", "y.tif", "plate/w.tif"])
    (tmp_path / "data" / ".processed" / "y.tif").unlink()
    report = redirect_links([managed / p for p in prefixes], result.tmp_dir, result.durable_for)
    assert not report.complete and not report.tmp_removed
    assert [s.link.name for s in report.switched] == ["x.tif", "w.tif"]
    (problem,) = report.problems
    assert problem.link.name == "y.tif" and "does not exist" in problem.reason
    assert "2 link(s) switched" in report.summary() and "y.tif" in report.summary()
    # every link still points at an existing file; the local copies are kept
    assert all(Path(t).is_file() for t in _targets(managed).values())
    assert _targets(managed)[f"{prefixes[1]}/y.tif"] == str(result.tmp_dir / "y.tif")
    # once the durable copy is there, running it again finishes the job
    (tmp_path / "data" / ".processed" / "y.tif").write_text("y.tif")
    again = redirect_links([managed / p for p in prefixes], result.tmp_dir, result.durable_for)
    assert again.complete and [s.link.name for s in again.switched] == ["y.tif"]
    assert not result.tmp_dir.exists()


def test_incomplete_redirection_is_reported_and_keeps_the_local_copy(tmp_path: Path) -> None:
    result, managed, prefixes = _local_copy(tmp_path, ["x.tif"])
    (tmp_path / "data" / ".processed" / "x.tif").unlink()
    order = make_order([tmp_path / "data" / "x.tif"], container="c")
    ctx = make_context(order, settings_for(tmp_path)).ctx
    report = redirect_filesets(ctx, result, prefixes)
    assert not report.complete
    assert report.summary().startswith("0 link(s) switched")
    assert "x.tif" in report.summary()
    assert result.tmp_dir.exists()


def test_switch_leaves_no_temporary_links(tmp_path: Path) -> None:
    result, managed, prefixes = _local_copy(tmp_path, ["x.tif"])
    link = managed / prefixes[0] / "x.tif"
    entries = os.listdir(link.parent)
    redirect_links([managed / prefixes[0]], result.tmp_dir, result.durable_for)
    assert os.listdir(link.parent) == entries
    assert os.readlink(link) == str(tmp_path / "data" / ".processed" / "x.tif")


def test_failure_half_way_leaves_every_link_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, managed, prefixes = _local_copy(tmp_path, ["x.tif", "y.tif"])
    real_replace = os.replace

    def replace(source: str, destination: str) -> None:
        if Path(destination).name == "y.tif":
            raise PermissionError(13, "Permission denied")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    report = redirect_links([managed / p for p in prefixes], result.tmp_dir, result.durable_for)
    assert [s.link.name for s in report.switched] == ["x.tif"]
    assert "could not switch: Permission denied" in report.problems[0].reason
    assert all(Path(t).is_file() for t in _targets(managed).values())
    assert not [n for n in os.listdir(managed / prefixes[1]) if n != "y.tif"]
    assert result.tmp_dir.exists()


def test_links_elsewhere_are_left_alone(tmp_path: Path) -> None:
    result, managed, prefixes = _local_copy(tmp_path, ["x.tif"])
    other = tmp_path / "elsewhere.tif"
    other.write_text("other")
    (managed / prefixes[0] / "other.tif").symlink_to(other)
    report = redirect_links([managed / prefixes[0]], result.tmp_dir, result.durable_for)
    assert [s.link.name for s in report.switched] == ["x.tif"]
    assert os.readlink(managed / prefixes[0] / "other.tif") == str(other)


def test_missing_fileset_folder_is_reported(tmp_path: Path) -> None:
    result, managed, _ = _local_copy(tmp_path, ["x.tif"])
    report = redirect_links([managed / "nope"], result.tmp_dir, result.durable_for)
    assert "fileset folder not found" in report.summary() and result.tmp_dir.exists()


@pytest.mark.parametrize("prefix", ["", "/", "a/../../etc", "../x"])
def test_template_prefix_must_stay_inside_managed_repository(prefix: str) -> None:
    with pytest.raises(OrderFailed, match="templatePrefix"):
        fileset_dir(Path("/OMERO/ManagedRepository"), prefix)


def test_template_prefix_maps_to_its_folder() -> None:
    assert fileset_dir(Path("/m"), "alice_2/2024-05/01/10-00-00.000/") == Path(
        "/m/alice_2/2024-05/01/10-00-00.000")
