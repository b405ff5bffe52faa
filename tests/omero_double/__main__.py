"""``python -m tests.omero_double --port 14064 --state DIR [--world FILE]`` serves the
double and prints the environment a daemon needs (``KEY=value`` lines);
``python -m tests.omero_double dump --state DIR`` prints what it holds as JSON."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from tests.omero_double.world import World


def environment(port: int, control_url: str, state: Path) -> dict[str, str]:
    """The daemon's environment for this double (plus the importer stand-in's, when
    present); ``OMERO_DOUBLE_STATE`` comes last: readers stop at it."""
    env = {"OMERO_HOST": "127.0.0.1", "OMERO_PORT": str(port), "OMERO_USER": "root",
           "OMERO_PASSWORD": "omero", "OMERO_DOUBLE_CONTROL": control_url}
    from tests.importer_standin import install

    env.update(install(state / "bin", state_dir=state))
    env["OMERO_DOUBLE_STATE"] = str(state)
    return env


def serve(args: argparse.Namespace) -> None:
    from tests.omero_double.control import Control
    from tests.omero_double.server import DoubleServer

    state: Path = args.state.resolve()
    (state / "ManagedRepository").mkdir(parents=True, exist_ok=True)
    world = World(state)
    if args.world:
        world.extend(json.loads(Path(args.world).read_text()))
    ready = state / "double.json"
    control_port = args.control_port
    if not control_port and ready.exists():  # a restart keeps its control URL
        control_port = int(json.loads(ready.read_text())["control_url"].rsplit(":", 1)[1])
    server = DoubleServer(world, args.port, args.cert_dir or state / "cert")
    control = Control(world, control_port or 0, server.refuse)
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ice_port": args.port, "control_url": control.url,
                               "pid": os.getpid()}))
    os.replace(tmp, ready)
    for key, value in environment(args.port, control.url, state).items():
        print(f"{key}={value}")
    sys.stdout.flush()
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        control.close()
        server.communicator.destroy()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dump"]:
        parser = argparse.ArgumentParser(prog="python -m tests.omero_double dump")
        parser.add_argument("--state", type=Path, required=True)
        args = parser.parse_args(argv[1:])
        if not (args.state / "state.json").exists():
            parser.error(f"no OMERO double state in {args.state}")
        print(json.dumps(World(args.state).dump(), indent=2, sort_keys=True))
        return
    parser = argparse.ArgumentParser(prog="python -m tests.omero_double")
    parser.add_argument("--port", type=int, default=14064)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--world", type=Path, help="a JSON world file extending the default")
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--cert-dir", type=Path, help="where the SSL certificate is kept")
    serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
