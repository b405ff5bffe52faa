"""``omero-adi``: run the daemon and administer orders.

Every command reads the same settings (``--config``, ``$ADI_SETTINGS`` or
``config/settings.yml``, then the environment).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime
from typing import Any, Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi import __version__, logs
from omero_adi.settings import Settings, SettingsError, load_settings, mask_url
from omero_adi.store import admin, migrate
from omero_adi.store.models import FINAL_STAGES, STAGE_IMPORTED, STAGES
from omero_adi.store.session import open_store

log = logging.getLogger("omero_adi")


class CommandError(Exception):
    """Ends a command with a one-line message and exit status 1."""


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from omero_adi import metrics
    from omero_adi.daemon import Daemon
    from omero_adi.importing.importer import build_handler

    logs.configure(settings)
    log.info("omero-adi %s; settings: %s", __version__, settings.describe())
    engine = open_store(settings, wait=True)
    handler = build_handler(settings)
    daemon = Daemon(settings, engine, handler)
    endpoint = metrics.serve(daemon)
    daemon.install_signal_handlers()
    try:
        daemon.run()
    finally:
        if endpoint is not None:
            endpoint.close()
        handler.close()  # the admin session to OMERO
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_store(settings, run_migrations=False)
    if args.downgrade:
        revision = migrate.downgrade(engine, args.downgrade)
    else:
        revision = migrate.upgrade(
            engine, allow_auto_stamp=settings.allow_auto_stamp or args.allow_auto_stamp
        )
    print(f"{mask_url(settings.ingest_tracking_db)}: at revision {revision}"
          f"{' (head)' if revision == migrate.head_revision() else ''}")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from omero_adi.checks import run_checks

    failures = 0
    for name, ok, detail in run_checks(settings):
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return 1 if failures else 0


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_store(settings)
    info = {
        "Group": args.group, "Username": args.user, "DestinationID": args.destination_id,
        "DestinationType": args.destination_type, "Files": args.files,
    }
    if args.uuid:
        info["UUID"] = args.uuid
    if args.container:
        info.update({
            "preprocessing_container": args.container,
            "preprocessing_inputfile": args.input_file,
            "preprocessing_outputfolder": args.output_folder,
            "preprocessing_altoutputfolder": args.alt_output_folder,
            "extra_params": dict(_key_value(p) for p in args.param),
        })
    uuid = admin.submit(engine, info)
    print(uuid)
    if args.wait:
        return follow(engine, uuid, args.timeout)
    return 0


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise CommandError(f"--param {text!r}: write it as key=value")
    return key, value


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))  # SQLite returns text
    except ValueError:
        return None


def follow(engine: Engine, uuid: str, timeout: float) -> int:
    """Print each stage as it is recorded: time since the order, time since the
    previous stage. 0 when the order completes, 1 on failure or timeout."""
    deadline = time.monotonic() + timeout
    seen = 0
    first: datetime | None = None
    previous: datetime | None = None
    while time.monotonic() < deadline:
        events = admin.history(engine, uuid)
        for event in events[seen:]:
            moment = _moment(event.timestamp)
            first = first or moment
            total = f"{(moment - first).total_seconds():8.2f}s" if moment and first else "       ?"
            step = (f"(+{(moment - previous).total_seconds():.2f}s)"
                    if moment and previous else "")
            note = f"  {event.description}" if event.description else ""
            print(f"{total} {step:>12}  {event.stage}{note}", flush=True)
            previous = moment
        seen = len(events)
        if events and events[-1].stage in FINAL_STAGES:
            return 0 if events[-1].stage == STAGE_IMPORTED else 1
        time.sleep(0.2)
    print(f"order {uuid} did not finish within {timeout:.0f}s; is the daemon running? "
          f"(follow it with `omero-adi status --uuid {uuid}`)", file=sys.stderr)
    return 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_store(settings, run_migrations=False)
    orders = admin.recent_orders(
        engine, uuid=args.uuid, user=args.user, group=args.group, stage=args.stage,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps([o.as_dict() for o in orders], indent=2))
        return 0
    if args.uuid and not orders:
        raise CommandError(f"no order with uuid {args.uuid!r}")
    header = ("UUID", "STAGE", "GROUP", "USER", "TARGET", "UPDATED", "DESCRIPTION")
    rows = [
        (o.uuid, o.stage, o.group, o.user, o.destination,
         o.timestamp.strftime("%Y-%m-%d %H:%M:%S") if o.timestamp else "",
         (o.description or "")[:60])
        for o in orders
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    event_id = admin.retry(open_store(settings), args.uuid)
    print(f"order {args.uuid} re-queued (event {event_id})")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    event_id = admin.cancel(open_store(settings), args.uuid)
    print(f"order {args.uuid} cancelled (event {event_id})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="settings file (YAML or JSON); default: $ADI_SETTINGS or "
                        "config/settings.yml")
    parser = argparse.ArgumentParser(prog="omero-adi", description=__doc__.splitlines()[0],
                                     parents=[common])
    parser.add_argument("--version", action="version", version=f"omero-adi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Callable[[argparse.Namespace, Settings], int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[common])
        sub.set_defaults(run=run)
        return sub

    add("run", cmd_run, "run the import daemon (as python -m omero_adi.main does)")
    add("check", cmd_check, "check database, OMERO, Podman and storage; exit 1 on any failure")
    migrate_cmd = add("migrate", cmd_migrate, "bring the order database to the current schema")
    migrate_cmd.add_argument("--allow-auto-stamp", action="store_true",
                             help="adopt a database without a version table")
    migrate_cmd.add_argument("--downgrade", metavar="REVISION",
                             help="step back to REVISION (or 'base') instead")

    submit = add("submit", cmd_submit, "create an import order")
    submit.add_argument("--group", required=True)
    submit.add_argument("--user", required=True)
    submit.add_argument("--destination-type", choices=("Dataset", "Screen"), default="Dataset")
    submit.add_argument("--destination-id", required=True, type=int)
    submit.add_argument("--uuid", help="order id (default: a new UUID)")
    submit.add_argument("--container", help="preprocessing container image")
    submit.add_argument("--input-file", default="{Files}")
    submit.add_argument("--output-folder", default="/data")
    submit.add_argument("--alt-output-folder", default="/out")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra preprocessing parameter (repeatable)")
    submit.add_argument("--wait", action="store_true", help="follow the order until it finishes")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")
    submit.add_argument("files", nargs="+", metavar="PATH")

    status = add("status", cmd_status, "show recent orders and their current stage")
    status.add_argument("--uuid")
    status.add_argument("--user")
    status.add_argument("--group")
    status.add_argument("--stage", choices=STAGES)
    status.add_argument("--limit", type=int, default=20)
    status.add_argument("--json", action="store_true")

    add("retry", cmd_retry, "re-queue a finished order").add_argument("uuid")
    add("cancel", cmd_cancel, "cancel an order nobody has started").add_argument("uuid")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
        if args.command != "run":
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        return int(args.run(args, settings))
    except SettingsError as exc:
        print(f"omero-adi: settings error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, admin.AdminError, migrate.MigrationError) as exc:
        print(f"omero-adi: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"omero-adi: database error: {mask_url(str(exc).splitlines()[0])}", file=sys.stderr)
        return 1
