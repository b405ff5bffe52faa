"""The real OMERO boundary (BlitzServer, unchanged) through the real omero-py,
BlitzGateway and ezomero, over Ice, against the OMERO double; plus a closed
port and omero-py's own ``omero import`` argument parser.

Missing omero-py fails these tests when ``ADI_REQUIRE_OMERO=1`` (scripts/test).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from omero_adi.importing.importer import DataPackageImporter, build_handler
from omero_adi.importing.importer_cli import ImporterFiles, build_command
from omero_adi.omero.blitz import BlitzServer, check_omero
from omero_adi.omero.user_session import BlitzUserSession
from omero_adi.omero.boundary import OmeroError, OmeroNotInstalled, OmeroUnreachable
from omero_adi.orders import Order
from omero_adi.pipeline import OrderContext, OrderFailed
from omero_adi.settings import Settings
from tests.omero_double.fixture import OmeroDouble

NAMESPACE = "omero-adi.test"


@pytest.fixture
def omero_py() -> None:
    """Needs omero-py and ezomero: skip without them, or fail when CI requires them."""
    try:
        import ezomero  # noqa: F401
        import omero.gateway  # noqa: F401
    except ImportError as exc:
        reason = (f"omero-py is not installed ({exc}); build it with scripts/build-ice.sh "
                  "and pip install '.[omero]'")
        if os.environ.get("ADI_REQUIRE_OMERO") == "1":
            pytest.fail(f"ADI_REQUIRE_OMERO=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the socket closes


def double_settings(double: OmeroDouble, **changes: object) -> Settings:
    env = double.env
    values: dict[str, object] = {"omero_host": env["OMERO_HOST"],
                                 "omero_port": int(env["OMERO_PORT"]),
                                 "omero_user": env["OMERO_USER"],
                                 "omero_password": env["OMERO_PASSWORD"]}
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def server(omero_py: None, omero_double: OmeroDouble) -> Iterator[BlitzServer]:
    blitz = BlitzServer(double_settings(omero_double))
    yield blitz
    blitz.close()


@pytest.fixture
def researcher(server: BlitzServer) -> Iterator[BlitzUserSession]:
    session = server.user_session("researcher", "Demo", 600_000)
    yield session
    session.close()


def test_a_user_session_is_a_sudo_session_with_the_ttl_asked_for(
        omero_double: OmeroDouble, researcher: BlitzUserSession) -> None:
    researcher.check_destination("Dataset", 151)
    researcher.check_destination("Screen", 451)
    session = omero_double.state()["sessions"][researcher.key]
    assert (session["user"], session["group"], session["sudoer"]) == (2, 3, 0)
    assert (session["ttl_ms"], session["tti_ms"]) == (600_000, 0)
    researcher.close()
    assert omero_double.state()["sessions"][researcher.key]["closed"]


def test_refusals_name_their_reason(omero_double: OmeroDouble, server: BlitzServer) -> None:
    omero_double.world({"users": [{"name": "both", "groups": ["Demo", "Lab2"]}]})
    refusals = {
        ("researcher", "Nowhere"): "group 'Nowhere' does not exist in OMERO",
        ("nobody", "Demo"): "user 'nobody' does not exist in OMERO",
        ("alice", "Demo"): "user 'alice' is not a member of group 'Demo'",
    }
    for (user, group), message in refusals.items():
        with pytest.raises(OmeroError, match=f"^{re.escape(message)}$"):
            server.user_session(user, group, 60_000)
    destinations = {
        ("researcher", "Dataset", 152):
            "Dataset 152 does not exist (or user 'researcher' cannot see it)",
        ("both", "Dataset", 152): "Dataset 152 is in group 'Lab2', not in the order's group 'Demo'",
        ("other", "Dataset", 151):
            "user 'other' may not add data to Dataset 151 (owned by 'researcher')",
        ("researcher", "Screen", 151): "Screen 151 does not exist (or user 'researcher' cannot",
    }
    for (user, kind, oid), message in destinations.items():
        session = server.user_session(user, "Demo", 60_000)
        with pytest.raises(OmeroError, match=f"^{re.escape(message)}"):
            session.check_destination(kind, oid)  # type: ignore[arg-type]
        session.close()


def test_a_restricted_admin_without_sudo_cannot_open_user_sessions(
        omero_py: None, omero_double: OmeroDouble) -> None:
    omero_double.world({"users": [{"name": "helper", "admin": "restricted",
                                   "privileges": ["WriteOwned"], "password": "pw"}]})
    server = BlitzServer(double_settings(omero_double, omero_user="helper", omero_password="pw"))
    # said before asking (#11): the server's refusal would be "Group sudo is not permitted"
    with pytest.raises(OmeroError, match="'helper' is a restricted administrator without the "
                                         "Sudo privilege"):
        server.user_session("researcher", "Demo", 60_000)
    server.close()


def test_fileset_reads_what_the_import_created(omero_double: OmeroDouble,
                                               researcher: BlitzUserSession,
                                               tmp_path: Path) -> None:
    files = [tmp_path / "run" / name for name in ("a.tif", "b.tif")]
    for f in files:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"pixels")
    made = omero_double.import_fileset({
        "session": researcher.key, "target": {"type": "Screen", "id": 451}, "kind": "plate",
        "images": 3, "name": "run", "files": [{"path": str(f), "client_path": str(f)[1:]}
                                              for f in files]})
    (info,) = researcher.filesets([made["fileset"]])
    assert info.template_prefix == made["template_prefix"]
    assert info.template_prefix.startswith("researcher_2/")
    assert info.used_files == tuple(files)
    assert info.image_ids == tuple(made["images"]) and len(info.image_ids) == 3
    assert info.plate_ids == tuple(made["plates"]) and len(info.plate_ids) == 1
    linked = omero_double.state_dir / "ManagedRepository" / info.template_prefix / "a.tif"
    assert linked.is_symlink() and linked.resolve() == files[0]
    assert researcher.filesets([999_999, made["fileset"]]) == [info]  # only those it holds


def test_annotations_are_linked_map_annotations(omero_double: OmeroDouble,
                                                researcher: BlitzUserSession,
                                                tmp_path: Path) -> None:
    made = omero_double.import_fileset({
        "session": researcher.key, "target": {"type": "Screen", "id": 451}, "kind": "plate",
        "images": 1, "name": "p", "files": [{"path": str(tmp_path), "client_path": "x/p"}]})
    (image_ann,) = researcher.annotate("Image", NAMESPACE, {made["images"][0]: {"UUID": "u1"}})
    (plate_ann,) = researcher.annotate("Plate", NAMESPACE, {made["plates"][0]: {"k": "v"}})
    annotations = omero_double.state()["annotations"]
    assert annotations[str(image_ann)]["links"] == [["Image", made["images"][0]]]
    assert annotations[str(plate_ann)]["links"] == [["Plate", made["plates"][0]]]
    assert (annotations[str(image_ann)]["ns"], annotations[str(image_ann)]["values"],
            annotations[str(image_ann)]["owner"]) == (NAMESPACE, [["UUID", "u1"]], 2)
    with pytest.raises(OmeroError, match="Image:999999"):
        researcher.annotate("Image", NAMESPACE, {999_999: {"UUID": "u1"}})


def test_a_user_session_ends_at_its_ttl_however_busy(omero_double: OmeroDouble,
                                                     server: BlitzServer) -> None:
    session = server.user_session("researcher", "Demo", 60_000)
    omero_double.advance(45)
    session.check_destination("Dataset", 151)
    omero_double.advance(45)
    with pytest.raises(OmeroError, match="timeToLive=60000"):
        session.check_destination("Dataset", 151)


def test_the_admin_session_survives_a_server_restart(omero_double: OmeroDouble,
                                                     server: BlitzServer) -> None:
    server.user_session("researcher", "Demo", 60_000).close()
    omero_double.restart()
    server.user_session("researcher", "Demo", 60_000).close()  # logs in again
    admin_logins = [s for s in omero_double.state()["sessions"].values() if s["user"] == 0
                    and s["sudoer"] is None]
    assert len(admin_logins) == 2


def test_a_refusing_server_is_unreachable(omero_double: OmeroDouble, server: BlitzServer) -> None:
    server.user_session("researcher", "Demo", 60_000).close()
    omero_double.refuse(60)
    with pytest.raises(OmeroUnreachable, match=r"^OMERO unreachable at 127\.0\.0\.1:\d+ \("):
        server.user_session("researcher", "Demo", 60_000)


def test_check_describes_the_server(omero_py: None, omero_double: OmeroDouble) -> None:
    ok, detail = check_omero(double_settings(omero_double))
    assert ok and detail.startswith("OMERO 5.6.14-ice36-double at 127.0.0.1:")


def _context(settings: Settings, tmp_path: Path) -> OrderContext:
    image = tmp_path / "a.tif"
    image.write_bytes(b"pixels")
    order = Order(event_id=1, uuid="u-real", group="lab", user="alice", destination_id=5,
                  destination_type="Dataset", files=(image,), file_names=("a.tif",))
    return OrderContext(order=order, settings=settings,
                        log=logging.LoggerAdapter(logging.getLogger("test.blitz"), {}),
                        record_stage=lambda stage, text: None, cancelled=threading.Event())


def test_unreachable_server_fails_the_order_after_the_retries(
        omero_py: None, closed_port: int, tmp_path: Path) -> None:
    settings = Settings(omero_host="127.0.0.1", omero_port=closed_port, omero_password="pw",
                        omero_connect_retries=2, log_file_path=str(tmp_path / "app.logs"),
                        omero_cli=str(tmp_path / "no-omero-cli"))
    with pytest.raises(OmeroUnreachable, match=f"^OMERO unreachable at 127.0.0.1:{closed_port} "):
        BlitzServer(settings).user_session("alice", "lab", 60_000)
    importer = DataPackageImporter(BlitzServer(settings), retry_delay=0.01)
    with pytest.raises(OrderFailed) as failure:
        importer(_context(settings, tmp_path))
    assert str(failure.value).startswith(f"OMERO unreachable at 127.0.0.1:{closed_port} (")
    assert str(failure.value).endswith("(gave up after 2 attempts); nothing was imported")
    ok, detail = check_omero(settings)
    assert not ok and detail.startswith("OMERO unreachable at 127.0.0.1")


def test_admin_login_problems_are_plain(omero_py: None, closed_port: int,
                                        omero_double: OmeroDouble) -> None:
    no_password = Settings(omero_host="127.0.0.1", omero_port=closed_port)
    assert check_omero(no_password) == (
        False, "no password for the OMERO admin 'root': set OMERO_PASSWORD")
    unknown_host = Settings(omero_host="no-such-host.invalid", omero_password="pw")
    assert check_omero(unknown_host) == (
        False, "OMERO unreachable at no-such-host.invalid:4064 (DNSException)")
    wrong = double_settings(omero_double, omero_password="wrong")
    assert check_omero(wrong) == (
        False, f"OMERO at {wrong.omero_host}:{wrong.omero_port} refused the login of 'root': "
               "check OMERO_USER and OMERO_PASSWORD")
    not_admin = double_settings(omero_double, omero_user="researcher")
    assert check_omero(not_admin) == (
        False, "OMERO user 'researcher' is not an administrator, so it cannot import for "
               "other users; set OMERO_USER to an admin (usually root)")


def test_the_real_omero_import_parser_accepts_the_command_line(omero_py: None) -> None:
    from omero.cli import CLI

    settings = Settings(skip_all=True)
    command = build_command(settings, session_key="key", destination_type="Screen",
                            destination_id=9, paths=[Path("/data/a"), Path("/data/b.tif")],
                            files=ImporterFiles(Path("logs/cli.u.logs"), Path("logs/cli.u.errs")))
    cli = CLI()
    cli.loadplugins()
    args, java_args = cli.parser.parse_known_args(command[1:])
    assert (args.key, args.server, args.port) == ("key", "localhost", "4064")
    assert (args.file, args.errs, args.depth, args.skip) == (
        "logs/cli.u.logs", "logs/cli.u.errs", 10, ["all"])
    assert (args.transfer, args.output, args.r, args.d) == ("ln_s", "yaml", "9", None)
    assert (args.parallel_upload, args.parallel_fileset) == ("2", "2")
    assert args.no_upgrade_check  # --no-upgrade is argparse's unique prefix of it
    assert args.path == ["/data/a", "/data/b.tif"]
    assert java_args == []


def test_without_omero_py_an_order_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "omero", None)  # makes `import omero` fail
    settings = Settings(log_file_path=str(tmp_path / "app.logs"))
    with pytest.raises(OmeroNotInstalled, match="omero-py is not installed"):
        BlitzServer(settings).user_session("alice", "lab", 60_000)
    with pytest.raises(OrderFailed, match="^omero-py is not installed .*scripts/build-ice.sh"):
        build_handler(settings)(_context(settings, tmp_path))
    ok, detail = check_omero(settings)
    assert not ok and "omero-py is not installed" in detail



def test_the_user_is_looked_up_by_name_not_by_listing_a_group(
        omero_py: None, omero_double: OmeroDouble) -> None:
    """IAdmin.lookupExperimenter, once per session; never IAdmin.containedExperimenters
    (what ezomero.get_user_id calls: the whole group's members, per order)."""
    omero_double.world({"users": [{"name": f"member{n}", "groups": ["Demo"]} for n in range(58)]})
    omero_double.fault("IAdmin.containedExperimenters", "omero.ApiUsageException",
                       message="the daemon listed a whole group", times=1000)
    server = BlitzServer(double_settings(omero_double))
    server.user_session("researcher", "Demo", 60_000).close()
    server.close()
    assert [f["times"] for f in omero_double.state()["faults"]] == [1000]  # never reached
