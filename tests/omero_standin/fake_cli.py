"""A stand-in for ``omero import`` with ``--transfer=ln_s`` (test fixture only).

Behaves like the real command-line importer as far as ADI can see: one
fileset per importable file, a fileset directory under the ManagedRepository
(template ``%user%_%userId%/%year%-%month%/%day%/%time%``) holding symbolic
links to the originals, one YAML document per fileset on ``--file``, progress
and errors on ``--errs``, exit 0, or 2 when an import failed, and
``No imports found`` with exit 0 when nothing is importable. Like the real
one it stops at the first failing file unless ``-c`` is given.

File-name markers choose what happens to a file: ``BROKEN`` fails its import,
``CRASH`` kills the importer, ``HANG`` makes it hang, ``seriesN`` gives N images.

Run as ``python -m tests.omero_standin.fake_cli import ...`` with
``OMERO_STANDIN_STATE`` naming the state file.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from tests.omero_standin.state import StandinState, new_id

NOT_IMPORTABLE = {".csv", ".txt", ".json", ".md", ".log", ".xml"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omero import")
    parser.add_argument("-k", dest="key", required=True)
    parser.add_argument("-s", dest="host")
    parser.add_argument("-p", dest="port")
    parser.add_argument("--transfer", required=True, choices=["ln_s"])
    parser.add_argument("--no-upgrade", action="store_true")
    parser.add_argument("--file")
    parser.add_argument("--errs")
    parser.add_argument("--output", choices=["yaml"])
    parser.add_argument("--parallel-upload", type=int)
    parser.add_argument("--parallel-fileset", type=int)
    parser.add_argument("--skip", action="append",
                        choices=["all", "checksum", "minmax", "thumbnails", "upgrade"])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("-c", dest="keep_going", action="store_true")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-d", dest="dataset", type=int)
    target.add_argument("-r", dest="screen", type=int)
    parser.add_argument("paths", nargs="+")
    return parser


def candidates(paths: list[str], depth: int) -> list[Path]:
    """Importable files under ``paths``, folders scanned ``depth`` levels down."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += _scan(path, depth)
        elif path.is_file() and _importable(path):
            found.append(path)
    return found


def _scan(folder: Path, depth: int) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and depth > 1:
            found += _scan(entry, depth - 1)
        elif entry.is_file() and _importable(entry):
            found.append(entry)
    return found


def _importable(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() not in NOT_IMPORTABLE


def _log(errs: IO[str], level: str, message: str) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    errs.write(f"{stamp} {os.getpid()} main {level:<5} ome.formats.importer.ImportLibrary - {message}\n")
    errs.flush()


def _fileset_dir(data: dict[str, Any], user: str) -> str:
    """A new fileset directory from the default template, unique like the server's."""
    now = datetime.now()
    user_id = data["users"][user]["id"]
    base = (f"{user}_{user_id}/{now:%Y-%m}/{now:%d}/"
            f"{now:%H-%M-%S}.{now.microsecond // 1000:03d}")
    root = Path(data["managed_repository"])
    prefix, suffix = base, 1
    while (root / prefix).exists():
        prefix, suffix = f"{base}__{suffix}", suffix + 1
    (root / prefix).mkdir(parents=True)
    return prefix


def import_one(state: StandinState, session: dict[str, Any], source: Path,
               args: argparse.Namespace) -> dict[str, Any]:
    """Create one fileset for ``source`` on the "server"; return its YAML entry."""
    series = re.search(r"series(\d+)", source.name)
    count = int(series.group(1)) if series else 1
    with state.edit() as data:
        prefix = _fileset_dir(data, session["user"])
        link = Path(data["managed_repository"]) / prefix / source.name
        link.symlink_to(source.absolute())
        fileset_id = new_id(data)
        image_ids = [new_id(data) for _ in range(count)]
        for image_id in image_ids:
            data["images"][str(image_id)] = {"fileset": fileset_id, "dataset": args.dataset}
        plate_ids = []
        if args.screen is not None:
            plate_id = new_id(data)
            data["plates"][str(plate_id)] = {
                "fileset": fileset_id, "screen": args.screen, "images": image_ids}
            plate_ids.append(plate_id)
        data["filesets"][str(fileset_id)] = {
            "template_prefix": prefix, "used_files": [str(source.absolute())],
            "images": image_ids, "plates": plate_ids,
            "owner": session["user"], "group": session["group"],
        }
    entry: dict[str, Any] = {"Fileset": fileset_id, "Image": image_ids}
    if plate_ids:
        entry["Plate"] = plate_ids
    return entry


def _yaml(entry: dict[str, Any]) -> str:
    lines = [f"- Fileset: {entry['Fileset']}"]
    lines += [f"  {key}: [{','.join(map(str, entry[key]))}]" for key in ("Image", "Plate")
              if key in entry]
    return "---\n" + "\n".join(lines) + "\n"


def run_import(argv: list[str], state: StandinState) -> int:
    args = _parser().parse_args(argv)
    data = state.read()
    session = data["sessions"].get(args.key)
    targets = data["datasets"] if args.dataset is not None else data["screens"]
    target_id = args.dataset if args.dataset is not None else args.screen
    target = targets.get(str(target_id))
    if session is None or session["closed"]:
        print("ERROR: the session key given with -k is not a live session", file=sys.stderr)
        return 1
    out = open(args.file, "w") if args.file else sys.stdout
    errs = open(args.errs, "w") if args.errs else sys.stderr
    with out, errs:
        if target is None or target["group"] != session["group"]:
            _log(errs, "ERROR", f"Target {target_id} not found in group {session['group']}")
            return 2
        files = candidates(args.paths, args.depth)
        if not files:
            errs.write("No imports found\n")
            return 0
        errors = imported = 0
        for source in files:
            _log(errs, "INFO", f"FILESET_UPLOAD_START {source}")
            if "HANG" in source.name:
                time.sleep(3600)
            if "CRASH" in source.name:
                errs.write("# A fatal error has been detected by the Java Runtime Environment\n")
                errs.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            if "BROKEN" in source.name:
                errors += 1
                _log(errs, "ERROR", f"FILE_EXCEPTION: {source}")
                errs.write(f"loci.formats.FormatException: {source.name}: unsupported or damaged file\n")
                if not args.keep_going:
                    break
                continue
            out.write(_yaml(import_one(state, session, source, args)))
            out.flush()
            imported += 1
            _log(errs, "INFO", f"IMPORT_DONE Imported file: {source}")
        errs.write(f"==> Summary\n{imported} fileset(s) created, {errors} error(s)\n")
        if errors:
            errs.write(f"Number of errors: {errors}\n")
        return 2 if errors else 0


def main(argv: list[str]) -> int:
    state = StandinState(Path(os.environ["OMERO_STANDIN_STATE"]))
    with state.edit() as data:
        data["cli_calls"].append(argv)
    if not argv or argv[0] != "import":
        print("stand-in omero: only `omero import` is implemented", file=sys.stderr)
        return 1
    return run_import(argv[1:], state)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
