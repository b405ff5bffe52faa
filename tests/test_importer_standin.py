"""The real ``omero import`` wrapper (omero-py) with the importer stand-in, against the
OMERO double: what the daemon's importer runs really see and leave behind."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
import zipfile
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from omero_adi.importing.importer_cli import ImporterFiles, build_command
from omero_adi.settings import Settings
from tests.helpers import wait_for
from tests.importer_standin import JARS, OMERO_JAVA, formats, install, unprivileged
from tests.importer_standin.fixture import ImporterSite, importer_site  # noqa: F401
from tests.importer_standin.jvm import RECORD, START_CLASS

DATASET, SCREEN = 151, 451
DEADLINE = 30.0


@dataclass
class Run:
    process: subprocess.CompletedProcess[str]
    out: str | None
    errs: str | None

    @property
    def documents(self) -> list[Any]:
        return list(yaml.safe_load_all(self.out or ""))

    def fileset_ids(self) -> list[int]:
        return [entry["Fileset"] for document in self.documents for entry in document]


@pytest.fixture
def site(importer_site: ImporterSite) -> ImporterSite:  # noqa: F811
    return importer_site


def command(site: ImporterSite, key: str, paths: list[Path], *, screen: bool = False,
            **settings: Any) -> tuple[list[str], ImporterFiles]:
    """The daemon's own command line (``build_command``), for the real wrapper."""
    logs = site.folder("logs", writable=True)
    files = ImporterFiles.for_order(logs, str(uuid.uuid4()))
    argv = build_command(
        Settings(omero_host=site.env["OMERO_HOST"], omero_port=int(site.env["OMERO_PORT"]),
                 **settings),
        session_key=key, destination_type="Screen" if screen else "Dataset",
        destination_id=SCREEN if screen else DATASET, paths=paths, files=files)
    return argv[1:], files


def run(site: ImporterSite, key: str, paths: list[Path], *, screen: bool = False,
        extra: tuple[str, ...] = (), as_root: bool = False, **settings: Any) -> Run:
    argv, files = command(site, key, paths, screen=screen, **settings)
    argv[1:1] = list(extra)
    process = site.omero(*argv, as_root=as_root)
    read = (lambda p: p.read_text() if p.exists() else None)
    return Run(process, read(files.out), read(files.errs))


def client_paths(fileset: dict[str, Any]) -> list[str]:
    return [entry["client_path"] for entry in fileset["entries"]]


def test_the_daemons_command_line_reaches_java_as_the_importer_expects(site: ImporterSite) -> None:
    image = formats.image(site.folder("data") / "cells.tif")
    key = site.session()
    argv, files = command(site, key, [image], skip_checksum=True, skip_minmax=True,
                          parallel_upload_per_worker=3, parallel_filesets_per_worker=2)
    done = site.omero(*argv)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in Path(site.env[RECORD]).read_text().splitlines()]
    assert calls[0] == ["-version"]  # omero.java.check_java
    jvm = calls[1]
    main = jvm.index(START_CLASS)
    classpath = jvm[jvm.index("-cp") + 1].split(":")
    libs = site.userdir / "cache" / "jars" / OMERO_JAVA / "libs"
    assert sorted(classpath) == sorted(str(libs / jar) for jar in JARS)
    assert f"-Dlogback.configurationFile={libs / 'logback-cli.xml'}" in jvm[:main]
    assert "-Domero.import.depth=10" in jvm[:main]
    assert jvm[main + 1:] == [
        "-s", site.env["OMERO_HOST"], "-p", site.env["OMERO_PORT"], "-k", key,
        "--checksum-algorithm=File-Size-64", "--no-stats-info",
        "-d", str(DATASET), "--output=yaml", "--transfer=ln_s", "--no-upgrade-check",
        "--parallel-upload=3", "--parallel-fileset=2", str(image),
    ]
    assert f"Using {OMERO_JAVA}" in done.stderr  # the wrapper's own stderr, not --errs
    assert "Using" not in files.errs.read_text()


def test_an_import_writes_yaml_on_file_and_progress_on_errs(site: ImporterSite) -> None:
    data = site.folder("data")
    one = formats.image(data / "one.tif")
    two = formats.image(data / "two.tif", series=2)
    result = run(site, site.session(), [one, two])
    assert result.process.returncode == 0, result.errs
    held = site.filesets()
    assert len(result.documents) == 2  # one YAML document per fileset
    for document in result.documents:
        (entry,) = document
        assert set(entry) == {"Fileset", "Image"}
        assert entry["Image"] == site.images_of(entry["Fileset"])
    by_file = {held[i]["entries"][0]["original"]: i for i in result.fileset_ids()}
    assert len(site.images_of(by_file[str(two)])) == 2
    errs = result.errs or ""
    assert errs.count("LoggingImportMonitor - FILESET_UPLOAD_START") == 2
    assert f"IMPORT_DONE Imported file: {one}" in errs
    assert f"IMPORT_DONE Imported file: {two}" in errs
    assert "Number of errors" not in errs  # logged at INFO only when there are errors
    assert "2 files uploaded, 2 filesets created, 3 images imported, 0 errors in" in errs


def test_session_files_stay_under_omero_userdir(site: ImporterSite) -> None:
    key = site.session()
    result = run(site, key, [formats.image(site.folder("data") / "a.tif")])
    assert result.process.returncode == 0, result.errs
    left = [p.relative_to(site.userdir) for p in (site.userdir / "sessions").rglob("*")
            if p.is_file()]
    assert any(key in str(p) for p in left), left


def test_root_is_refused_before_java_starts(site: ImporterSite) -> None:
    argv, files = command(site, site.session(), [formats.image(site.folder("data") / "a.tif")])
    done = site.omero(*argv, as_root=True)
    assert done.returncode == 1
    assert done.stdout.startswith("FATAL: Running ") and "as root" in done.stdout
    assert not Path(site.env[RECORD]).exists()  # java never ran
    assert not files.errs.exists() and not files.out.exists()


def test_a_bad_session_key_fails_in_the_wrapper_with_523(site: ImporterSite) -> None:
    key = str(uuid.uuid4())
    argv, files = command(site, key, [formats.image(site.folder("data") / "a.tif")])
    done = site.omero(*argv)
    assert done.returncode == 523 % 256  # ctx.die(523, …); sys.exit keeps the low byte
    port = site.env["OMERO_PORT"]
    assert f"Bad session key. Cannot join {key} on {site.env['OMERO_HOST']}:{port}." in done.stderr
    assert not Path(site.env[RECORD]).exists()  # java never ran
    assert not files.errs.exists()  # and there is no .errs at all
    assert site.filesets() == {}


def test_nothing_importable_is_usage_and_exit_1(site: ImporterSite) -> None:
    data = site.folder("data")
    (data / "notes.txt").write_text("not an image\n")
    formats.image(data / ".hidden.tif")  # dot files are never candidates
    result = run(site, site.session(), [data])
    assert result.process.returncode == 1
    errs = result.errs or ""
    assert "No imports found" in errs and "Usage:" in errs.split("No imports found")[1]
    assert result.out == "" and site.filesets() == {}


def test_only_damaged_files_is_no_imports_due_to_errors_and_exit_0(site: ImporterSite) -> None:
    result = run(site, site.session(), [formats.damaged(site.folder("data") / "bad.tif")])
    assert result.process.returncode == 0
    assert "FILE_EXCEPTION" in (result.errs or "")
    assert "No imports due to errors!" in (result.errs or "")
    assert result.out == "" and site.filesets() == {}


def test_an_unreadable_file_is_logged_but_not_counted(site: ImporterSite) -> None:
    data = site.folder("data")
    good = formats.image(data / "good.tif")
    locked = formats.image(data / "locked.tif")
    locked.chmod(0o000)
    result = run(site, site.session(), [good, locked])
    assert result.process.returncode == 0
    assert f"UNREADABLE_FILE: {locked}" in (result.errs or "")
    assert "0 errors" in (result.errs or "") and len(result.fileset_ids()) == 1
    alone = run(site, site.session(), [locked])
    assert alone.process.returncode == 1 and "No imports found" in (alone.errs or "")


def used_files_groups(site: ImporterSite, *paths: Path, depth: int = 4) -> list[list[str]]:
    """``omero import -f``: the candidates and their files, no session needed."""
    done = site.omero("import", "-f", "--depth", str(depth), *map(str, paths))
    assert done.returncode in (0, 125), done.stderr
    groups: list[list[str]] = []
    for line in done.stdout.splitlines():
        if line.startswith("# Group:"):
            groups.append([])
        elif line and not line.startswith("#"):
            groups[-1].append(line)
    return groups


def test_discovery_depth_hidden_folders_and_unknown_files(site: ImporterSite) -> None:
    top = site.folder("data") / "run"
    found = [formats.image(top / "a.tif"), formats.image(top / "x" / "y" / "z" / "four.tif"),
             formats.image(top / ".processed" / "converted.tif")]  # hidden folders are entered
    deep = formats.image(top / "x" / "y" / "z" / "w" / "five.tif")
    formats.image(top / "x" / ".dotfile.tif")
    (top / "x" / "readme.md").write_text("unknown format\n")
    groups = used_files_groups(site, top)
    assert sorted(g[0] for g in groups) == sorted(map(str, found))
    deeper = used_files_groups(site, top, depth=5)
    assert sorted(g[0] for g in deeper) == sorted(map(str, found + [deep]))


def test_a_multi_file_image_named_by_several_paths_is_one_fileset(site: ImporterSite) -> None:
    data = site.folder("data")
    main = formats.multifile(data / "set.companion", {"ch1.raw": "raw\n", "ch2.raw": "raw\n"})
    result = run(site, site.session(), [data / "ch1.raw", data / "ch2.raw", main])
    assert result.process.returncode == 0, result.errs
    (fileset_id,) = result.fileset_ids()
    assert [e["original"] for e in site.filesets()[fileset_id]["entries"]] == [
        str(main), str(data / "ch1.raw"), str(data / "ch2.raw")]
    assert "3 files uploaded, 1 fileset created" in (result.errs or "")


def test_a_file_used_by_another_candidate_is_not_imported_again(site: ImporterSite) -> None:
    data = site.folder("data")
    members = [formats.image(data / f"field{n}.tif") for n in (1, 2)]  # importable alone too
    main = formats.write(data / "set.companion",
                         formats.Sample("image", files=("field1.tif", "field2.tif")))
    result = run(site, site.session(), [*members, main])
    assert result.process.returncode == 0, result.errs
    (fileset_id,) = result.fileset_ids()
    assert len(site.filesets()[fileset_id]["entries"]) == 3


def test_a_plate_into_a_screen(site: ImporterSite) -> None:
    result = run(site, site.session(), [formats.plate(site.folder("data") / "p.tif", fields=4)],
                 screen=True)
    assert result.process.returncode == 0, result.errs
    ((entry,),) = result.documents
    assert list(entry) == ["Fileset", "Image", "Plate"] and len(entry["Image"]) == 4
    assert entry["Plate"] == site.state()["screens"][str(SCREEN)]["children"][-1:]
    assert "1 fileset, 1 plate created, 4 images imported" in (result.errs or "")


def test_client_paths_are_sanitised_and_links_point_at_the_originals(site: ImporterSite) -> None:
    folder = site.folder("data") / "2026-11-21 10:30:00"
    image = formats.image(folder / "what?.tif")
    result = run(site, site.session(), [folder])
    assert result.process.returncode == 0, result.errs
    fileset = site.filesets()[result.fileset_ids()[0]]
    expected = str(image).lstrip("/").replace(":", ";").replace("?", "%")
    assert client_paths(fileset) == [expected]  # no leading slash, component by component
    link = site.managed_repository / fileset["template_prefix"] / "what%.tif"
    assert link.is_symlink() and link.resolve() == image.resolve()


def test_first_failure_stops_the_other_filesets(site: ImporterSite) -> None:
    data = site.folder("data")
    never = str(site.root / "never")
    paths = [formats.image(data / "bad.tif", on_import="fail"),
             formats.image(data / "waiting.tif", wait=never), formats.image(data / "late.tif")]
    result = run(site, site.session(), paths, parallel_filesets_per_worker=2)
    assert result.process.returncode == 2
    errs = result.errs or ""
    assert "Error on import" in errs and "Exiting on error" in errs
    assert "0 filesets created, 0 images imported, 1 error in" in errs
    # the server's import started (ImportCallback), then its failure response came
    assert errs.index("IMPORT_STARTED") < errs.index("INTERNAL_EXCEPTION")
    # only the failed fileset is on the server (kept without images, as a real
    # server keeps it); the waiting and the queued ones never started
    ((failed_id, failed),) = site.filesets().items()
    assert failed["entries"][0]["original"] == str(paths[0])
    assert site.images_of(failed_id) == [] and result.out == ""


def test_with_c_the_others_continue_and_the_run_exits_0(site: ImporterSite) -> None:
    data = site.folder("data")
    paths = [formats.image(data / "bad.tif", on_import="fail"),
             formats.image(data / "a.tif"), formats.image(data / "b.tif")]
    result = run(site, site.session(), paths, extra=("-c",), parallel_filesets_per_worker=2)
    assert result.process.returncode == 0  # -c: a failed fileset still counts as done
    assert "Continuing after error" in (result.errs or "")
    assert "Number of errors: 1" in (result.errs or "")
    reported = result.fileset_ids()
    assert len(reported) == 2 and all(site.images_of(f) for f in reported)
    assert len(site.filesets()) == 3  # the failed one too, without images


def test_a_fileset_the_server_imported_may_be_missing_from_the_report(site: ImporterSite) -> None:
    """Two filesets in parallel: one is imported on the server but not yet reported
    when the other fails; the importer stops and never reports it."""
    data, flag = site.folder("data"), site.root / "go"
    held = formats.image(data / "held.tif", hold=str(site.root / "never"))
    bad = formats.image(data / "bad.tif", wait=str(flag), on_import="fail")
    argv, files = command(site, site.session(), [held, bad], parallel_filesets_per_worker=2)
    from tests.importer_standin import real_omero

    process = unprivileged.popen([str(real_omero()), *argv], site.who, site.env, cwd=site.root)
    wait_for(site.filesets, DEADLINE, "the held fileset on the server")
    flag.touch()
    assert process.wait(timeout=DEADLINE) == 2
    (fileset_id,) = [i for i, f in site.filesets().items()
                     if f["entries"][0]["original"] == str(held)]
    assert site.images_of(fileset_id)  # imported on the server ...
    assert files.out.read_text() == ""  # ... but the report never names it


@pytest.mark.parametrize("change", ["moved away", "made unreadable"])
def test_a_file_changed_after_the_scan_leaves_its_fileset_without_images(
        site: ImporterSite, change: str) -> None:
    """The server saves the Fileset before any transfer (importFileset); the transfer
    then fails: the server's read through the new link, or the importer's checksum."""
    data, flag = site.folder("data"), site.root / "go"
    image = formats.image(data / "a.tif", wait=str(flag))
    argv, files = command(site, site.session(), [image])
    from tests.importer_standin import real_omero

    process = unprivileged.popen([str(real_omero()), *argv], site.who, site.env, cwd=site.root)
    wait_for(lambda: files.errs.exists() and "Joined session as" in files.errs.read_text(),
             DEADLINE, what="the importer to scan and join the session")
    if change == "moved away":
        image.rename(site.folder("elsewhere") / image.name)
    else:
        image.chmod(0o000)
    flag.touch()
    assert process.wait(timeout=DEADLINE) == 2
    errs = files.errs.read_text()
    ((fileset_id, fileset),) = site.filesets().items()
    assert [e["original"] for e in fileset["entries"]] == [str(image)]
    assert site.images_of(fileset_id) == []
    link = site.managed_repository / fileset["template_prefix"] / "a.tif"
    assert link.is_symlink()  # made before the check that failed, and kept
    exception = ("java.lang.RuntimeException: omero.ResourceError" if change == "moved away"
                 else f"java.lang.RuntimeException: java.io.FileNotFoundException: {image} "
                      "(Permission denied)")
    events = ["FILESET_UPLOAD_PREPARATION", f"FILE_UPLOAD_STARTED: {image}",
              f"FILE_EXCEPTION: {image}\n{exception}", f"Error on import\n{exception}",
              "Exiting on error"]
    assert all(event in errs for event in events), errs
    assert [errs.index(event) for event in events] == sorted(errs.index(e) for e in events)
    assert "FILESET_UPLOAD_END" not in errs and "IMPORT_STARTED" not in errs
    assert "0 files uploaded, 0 filesets created, 0 images imported, 1 error in" in errs


def test_a_target_not_found_or_not_linkable_stops_before_the_server_is_asked(
        site: ImporterSite) -> None:
    image = formats.image(site.folder("data") / "a.tif")
    argv, files = command(site, site.session(), [image])
    argv[argv.index("-d") + 1] = "999"
    done = site.omero(*argv)
    assert done.returncode == 2
    errs = files.errs.read_text()
    assert "ImportLibrary - Could not load target: " in errs
    assert ("Error on import\njava.lang.RuntimeException: Failed to load target\n"
            "Caused by: omero.ValidationException: No row with the given identifier") in errs
    argv, files = command(site, site.session("other"), [image])  # researcher's Dataset
    assert site.omero(*argv).returncode == 2
    errs = files.errs.read_text()
    assert f"Import target specifies container: Dataset:{DATASET}" in errs
    assert ("ImportLibrary - Cannot link to target\n" in errs
            and "java.lang.IllegalArgumentException: Cannot link to target" in errs)
    assert "FILESET_UPLOAD_PREPARATION" not in errs and site.filesets() == {}


def test_the_used_files_listing_says_spw_as_java_prints_a_boolean(site: ImporterSite) -> None:
    data = site.folder("data")
    plate, image = formats.plate(data / "p.tif"), formats.image(data / "i.tif")
    done = site.omero("import", "-f", str(plate), str(image))
    assert f"# Group: {plate} SPW: true Reader: " in done.stdout
    assert f"# Group: {image} SPW: false Reader: " in done.stdout


def test_a_crashing_jvm(site: ImporterSite) -> None:
    result = run(site, site.session(), [formats.image(site.folder("data") / "a.tif",
                                                      on_import="crash")])
    assert result.process.returncode == 250  # the wrapper exits with p.wait() (-6) & 0xff
    assert "A fatal error has been detected by the Java Runtime Environment" in (result.errs or "")


def test_empty_client_jars_folder_is_exit_103(site: ImporterSite) -> None:
    omerodir = site.folder("OMERO.server")
    (omerodir / "lib" / "client").mkdir(parents=True)
    argv, _ = command(site, site.session(), [formats.image(site.folder("data") / "a.tif")])
    done = site.omero(*argv, env={"OMERODIR": str(omerodir)})
    assert done.returncode == 103
    assert f"No JAR files found under '{omerodir / 'lib' / 'client'}'" in done.stderr


def test_install_matches_what_fetch_jars_unpacks(site: ImporterSite, tmp_path: Path) -> None:
    """``omero import --fetch-jars URL`` (the Dockerfile's step) from a zip of the
    stand-in's layout leaves the same files the wrapper then uses."""
    served = unprivileged.workspace()
    try:
        libs = site.userdir / "cache" / "jars" / OMERO_JAVA / "libs"
        with zipfile.ZipFile(served / "OMERO.java.zip", "w") as archive:
            archive.writestr(f"{OMERO_JAVA}/", "")
            archive.writestr(f"{OMERO_JAVA}/libs/", "")
            for item in sorted(libs.iterdir()):
                archive.write(item, f"{OMERO_JAVA}/libs/{item.name}")
        handler = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                    lambda *a: handler(*a, directory=str(served)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        fresh = site.folder("fresh-userdir", writable=True)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/OMERO.java.zip"
        done = site.omero("import", "--fetch-jars", url, env={"OMERO_USERDIR": str(fresh)})
        httpd.shutdown()
        assert done.returncode == 0, done.stderr
        installed = install(tmp_path / "bin", state_dir=tmp_path / "state")["OMERO_USERDIR"]

        def tree(root: Path) -> dict[str, bytes]:
            return {str(p.relative_to(root)): p.read_bytes()
                    for p in (root / "cache" / "jars").rglob("*") if p.is_file()}

        assert tree(fresh) == tree(Path(installed))
    finally:
        unprivileged.discard(served)
