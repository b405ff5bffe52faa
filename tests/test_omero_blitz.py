"""The real OMERO boundary (omero-py), up to the network.

No OMERO server runs here: these tests check the real code against a closed
port and against omero-py's own ``omero import`` argument parser. When
omero-py is missing they skip, unless ``ADI_REQUIRE_OMERO=1`` (CI) makes
them fail.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from omero_adi.importing.importer import DataPackageImporter, build_handler
from omero_adi.importing.importer_cli import ImporterFiles, build_command
from omero_adi.omero.blitz import BlitzServer, check_omero
from omero_adi.omero.boundary import OmeroNotInstalled, OmeroUnreachable
from omero_adi.orders import Order
from omero_adi.pipeline import OrderContext, OrderFailed
from omero_adi.settings import Settings


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


def test_admin_login_problems_are_plain(omero_py: None, closed_port: int) -> None:
    no_password = Settings(omero_host="127.0.0.1", omero_port=closed_port)
    assert check_omero(no_password) == (
        False, "no password for the OMERO admin 'root': set OMERO_PASSWORD")
    unknown_host = Settings(omero_host="no-such-host.invalid", omero_password="pw")
    assert check_omero(unknown_host) == (
        False, "OMERO unreachable at no-such-host.invalid:4064 (DNSException)")


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
