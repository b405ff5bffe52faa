"""``omero-adi``: run the daemon and administer orders.

Every command reads the same settings (``--config``, ``$ADI_SETTINGS`` or
``config/settings.yml``, then the environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi import __version__, logs
from omero_adi.follow import follow
from omero_adi.notify import commands as notify_commands
from omero_adi.settings import Settings, SettingsError, load_settings, mask_url
from omero_adi.store import admin, migrate
from omero_adi.store.admin import OrderStatus
from omero_adi.store.models import STAGES
from omero_adi.store.retry import server_message
from omero_adi.store.session import DatabaseUnusable, describe_error, open_existing_store, open_store

if TYPE_CHECKING:  # imported where they run: `omero-adi status` starts fast
    from omero_adi.daemon import Daemon
    from omero_adi.watch.runner import WatchRunner

log = logging.getLogger("omero_adi")


class CommandError(Exception):
    """Ends a command with a one-line message and exit status 1."""


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from omero_adi import metrics
    from omero_adi.daemon import Daemon
    from omero_adi.importing.importer import build_handler
    from omero_adi.watch.report import register_metrics
    from omero_adi.watch.runner import WatchRunner

    logs.configure(settings)
    log.info("omero-adi %s; settings: %s", __version__, settings.describe())
    for warning in args.unknown_settings:
        log.warning("%s", warning)
    try:
        engine = open_store(settings, wait=True)
    except DatabaseUnusable as exc:
        log.critical("%s", exc)  # to the log file as well as standard error
        return 1
    handler = build_handler(settings)
    daemon = Daemon(settings, engine, handler)
    watcher = WatchRunner(settings, engine, handler.server)
    endpoint = metrics.serve(daemon)
    if endpoint is not None:
        register_metrics(watcher, endpoint.metrics.registry)
    try:
        run_daemon(daemon, watcher)
    finally:
        if endpoint is not None:
            endpoint.close()
        handler.close()  # the admin session to OMERO
    return 0


def run_daemon(daemon: Daemon, watcher: WatchRunner) -> None:
    """The daemon and its watch folders, until SIGTERM or Ctrl-C."""
    daemon.install_signal_handlers()
    watcher.start()
    try:
        daemon.run()
    finally:
        watcher.stop()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    settings = dataclasses.replace(settings, ingest_tracking_db=settings.migration_url)
    engine = open_store(settings, run_migrations=False)
    try:
        if args.downgrade:
            with engine.connect() as connection:
                before = migrate.current_revision(connection) or "base"
            after = migrate.downgrade(engine, args.downgrade)
            done = (f"downgraded from {before}; now at revision {after}" if before != after
                    else f"already at revision {after}; nothing to do")
        else:
            done = migrate.upgrade_report(
                engine, allow_auto_stamp=settings.allow_auto_stamp or args.allow_auto_stamp
            ).describe()
    finally:
        engine.dispose()
    print(f"{mask_url(settings.ingest_tracking_db)}: {done}")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from omero_adi.checks import run_checks

    failures = 0
    for name, ok, detail in run_checks(settings, args.unknown_settings):
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return 1 if failures else 0


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    for path in args.files:
        if "://" not in path and not os.path.isabs(path):
            raise CommandError(f"{path!r} is a relative path; give absolute paths as the daemon "
                               f"sees them (here it would be {os.path.abspath(path)})")
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


#: Characters of a description the status table shows; a cut ends in "…".
DESCRIPTION_WIDTH = 60


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_existing_store(settings)
    try:
        orders = admin.recent_orders(
            engine, uuid=args.uuid, user=args.user, group=args.group, stage=args.stage,
            limit=args.limit,
        )
    except SQLAlchemyError as exc:
        _older_database(engine, exc)
        raise
    if args.json:
        print(json.dumps([o.as_dict() for o in orders], indent=2))
        return 0
    if args.uuid and not orders:
        raise CommandError(f"no order with uuid {args.uuid!r}")
    if args.uuid:
        print(_details(orders[0]))
        notify_commands.status_lines(engine, settings, args.uuid)  # its files the guard misses
        return 0
    header = ("UUID", "STAGE", "GROUP", "USER", "TARGET", "UPDATED", "DESCRIPTION")
    rows = [
        (o.uuid, o.stage, o.group, o.user, o.destination,
         o.timestamp.strftime("%Y-%m-%d %H:%M:%S") if o.timestamp else "",
         _cut(o.progress.describe() if o.progress else o.description or ""))
        for o in orders
    ]
    _print_table(header, rows)
    if settings.watch:
        print()
        _print_watch_status(engine)
    notify_commands.status_lines(engine, settings, None)
    return 0


def _older_database(engine: Engine, exc: SQLAlchemyError) -> None:
    """Explain a failed read by a database that this omero-adi has not migrated yet."""
    with engine.connect() as connection:
        revision, head = migrate.current_revision(connection), migrate.head_revision()
    if revision != head:
        raise CommandError(
            f"the order database is at revision {revision}, older than this omero-adi "
            f"({head}), so its tables lack what `status` reads: run `omero-adi migrate` "
            "(or start the daemon, which migrates)") from exc


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def _print_watch_status(engine: Engine) -> None:
    from omero_adi.watch.report import STATUS_HEADER, status_rows

    try:
        rows = status_rows(engine)
    except SQLAlchemyError as exc:
        raise CommandError(f"cannot read the watch tables ({type(exc).__name__}); "
                           "run `omero-adi migrate`") from exc
    _print_table(STATUS_HEADER, rows)


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from omero_adi.watch import ledger
    from omero_adi.watch.report import dry_run

    if not settings.watch:
        raise CommandError("no watch rules in the settings (the `watch:` list)")
    if args.dry_run:
        try:  # never creates a database, not even an SQLite file
            engine = open_existing_store(settings)
            known = {rule.name: ledger.known_units(engine, rule.name) for rule in settings.watch}
        except (DatabaseUnusable, SQLAlchemyError) as exc:
            print(f"(no ledger: {exc}; every unit is shown as new)")
            known = {}
        for line in dry_run(settings, lambda name: known.get(name, {})):
            print(line, flush=True)
        return 0
    engine = open_existing_store(settings)
    if args.forget:
        was = ledger.forget(engine, args.forget)
        if was != "refused":
            raise CommandError(f"{args.forget} is {'not in the ledger' if was is None else was}"
                               "; only refused units can be forgotten")
        print(f"{args.forget}: forgotten; the next scan looks at it afresh")
        return 0
    _print_watch_status(engine)
    return 0


def _cut(text: str, width: int = DESCRIPTION_WIDTH) -> str:
    """The first line of ``text`` in ``width`` characters; "…" marks anything left out."""
    first, _, rest = text.partition("\n")
    if len(first) > width or rest.strip():
        return first[:width - 1].rstrip() + "…"
    return first


def _details(order: OrderStatus) -> str:
    """One order, every field whole (``status --uuid``)."""
    files = order.files if isinstance(order.files, list) else [order.files]
    fields = [
        ("uuid", order.uuid), ("stage", order.stage),
        ("progress", order.progress.describe() if order.progress else ""),
        ("group", order.group), ("user", order.user), ("target", order.destination),
        ("updated", order.timestamp.isoformat(sep=" ", timespec="seconds")
         if order.timestamp else ""),
        ("files", "\n".join(map(str, files))), ("description", order.description or ""),
    ]
    return "\n".join(f"{name + ':':<12} " + value.replace("\n", "\n" + " " * 13)
                     for name, value in fields if value)


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    event_id = admin.retry(open_existing_store(settings), args.uuid)
    print(f"order {args.uuid} re-queued (event {event_id})")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    event_id = admin.cancel(open_existing_store(settings), args.uuid)
    print(f"order {args.uuid} cancelled (event {event_id})")
    return 0


def cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    if args.test:
        return notify_commands.send_tests(settings)
    return notify_commands.show_outbox(open_store(settings, run_migrations=False))


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    return notify_commands.verify(open_store(settings), settings, args.uuid, args.since)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="settings file (YAML or JSON); default: $ADI_SETTINGS or "
                        "config/settings.yml")
    parser = argparse.ArgumentParser(prog="omero-adi", description=__doc__.splitlines()[0],
                                     parents=[common])
    parser.add_argument("--version", action="version", version=f"omero-adi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def add(name: str, run: Callable[[argparse.Namespace, Settings], int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[common])
        sub.set_defaults(run=run)
        return sub

    add("run", cmd_run, "run the import daemon (as python -m omero_adi.main does)")
    add("check", cmd_check, "check settings, database, OMERO, the importer, Podman and storage; "
        "exit 1 on any failure")
    migrate_cmd = add("migrate", cmd_migrate, "bring the order database to the current schema")
    migrate_cmd.add_argument("--allow-auto-stamp", action="store_true",
                             help="adopt a database without a version table")
    migrate_cmd.add_argument("--downgrade", metavar="REVISION",
                             help="step back to REVISION (or 'base') instead")

    submit = add("submit", cmd_submit, "create an import order")
    submit.add_argument("--group", required=True, help="OMERO group the data goes into")
    submit.add_argument("--user", required=True, help="OMERO user who will own the data")
    submit.add_argument("--destination-type", choices=("Dataset", "Screen"), default="Dataset",
                        help="kind of the destination (default: Dataset)")
    submit.add_argument("--destination-id", required=True, type=int,
                        help="id of the Dataset or Screen to import into")
    submit.add_argument("--uuid", help="order id (default: a new UUID)")
    submit.add_argument("--container", help="preprocessing container image")
    submit.add_argument("--input-file", default="{Files}",
                        help="the container's --inputfile (default: {Files}, each file in turn)")
    submit.add_argument("--output-folder", default="/data",
                        help="where the container sees the file's folder (default: /data)")
    submit.add_argument("--alt-output-folder", default="/out",
                        help="where the container sees the local output folder (default: /out)")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra preprocessing parameter (repeatable)")
    submit.add_argument("--wait", action="store_true",
                        help="follow the order, with its progress, until it finishes "
                        "(Ctrl-C stops following; the order goes on)")
    submit.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds --wait waits (default: 3600)")
    submit.add_argument("files", nargs="+", metavar="PATH",
                        help="absolute path of a file or folder, as the daemon sees it")

    status = add("status", cmd_status, "show recent orders and their current stage")
    status.add_argument("--uuid", help="show this order alone, every field whole")
    status.add_argument("--user", help="only this OMERO user's orders")
    status.add_argument("--group", help="only this OMERO group's orders")
    status.add_argument("--stage", choices=STAGES, help="only orders now at this stage")
    status.add_argument("--limit", type=int, default=20,
                        help="show at most this many orders (default: 20)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    watch = add("watch", cmd_watch, "show the watch rules' scans and units (docs/watch.md)")
    watch.add_argument("--dry-run", action="store_true",
                       help="scan now and print what each rule would order, writing nothing")
    watch.add_argument("--forget", metavar="PATH",
                       help="drop a refused unit from the ledger so it is looked at again")

    add("retry", cmd_retry, "re-queue a finished order").add_argument(
        "uuid", help="the order's uuid")
    add("cancel", cmd_cancel, "cancel an order nobody has started").add_argument(
        "uuid", help="the order's uuid")

    notify = add("notify", cmd_notify, "show notifications waiting or refused; --test sends "
                 "a test message on each channel")
    notify.add_argument("--test", action="store_true",
                        help="send a test message on each channel and say what happened")
    verify = add("verify", cmd_verify, "check now that files imported in place are still "
                 "there, unchanged; exit 1 when any is not")
    which = verify.add_mutually_exclusive_group()
    which.add_argument("--uuid", help="only this order's files")
    which.add_argument("--since", type=datetime.fromisoformat, metavar="DATE",
                       help="only files imported since DATE (ISO 8601, e.g. 2026-11-01)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    settings: Settings | None = None
    try:
        args.unknown_settings = []
        settings = load_settings(getattr(args, "config", None), unknown=args.unknown_settings)
        if args.command != "run":
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
            if args.command != "check":  # check reports them itself
                for warning in args.unknown_settings:
                    log.warning("%s", warning)
        return int(args.run(args, settings))
    except KeyboardInterrupt:
        print("omero-adi: interrupted", file=sys.stderr)
        return 130
    except SettingsError as exc:
        print(f"omero-adi: settings error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, admin.AdminError, migrate.MigrationError, DatabaseUnusable) as exc:
        print(f"omero-adi: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        where = (describe_error(settings.ingest_tracking_db, exc) if settings
                 else server_message(exc))
        print(f"omero-adi: database error: {where}", file=sys.stderr)
        return 1
