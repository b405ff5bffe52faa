"""The ``java`` that ``omero import`` starts: JVM options, then the importer's main class.

omero-py (``omero/java.py``) first runs ``java -version`` (``check_java``: any
exit status but 0 is "Java could not be found"), then
``java -Dlog4j.configuration=… <xargs> [JAVA_OPTS] -Djava.awt.headless=true
ome.formats.importer.cli.CommandLineImporter <args>``; the import plugin's
xargs are ``-Dlogback.configurationFile=…``, ``-Djava.io.tmpdir=…``,
``-Xmx1024M``, ``-cp <the jars>`` and ``-Domero.import.depth=N``
(``omero/plugins/import.py``). The class must be on the class path: the
importer lives in omero-blitz's jar, so without it this exits 1 as a JVM does.

Run as a script (``tests/importer_standin/jvm.py``) so that the working
directory's own ``tests`` folder can never shadow this package.
"""

from __future__ import annotations

import json
import os
import sys
import threading

if __name__ == "__main__":  # before the package imports below: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.importer_standin.importer import NOT_MODELLED, flush_and_exit, main  # noqa: E402

START_CLASS = "ome.formats.importer.cli.CommandLineImporter"
#: The jar (file name prefix) that holds START_CLASS.
IMPORTER_JAR = "omero-blitz"
#: Set to a file name, every command line this ``java`` gets is appended to it (JSON).
RECORD = "ADI_STANDIN_RECORD_ARGV"
VERSION = 'openjdk version "17.0.13" 2024-10-15\nOpenJDK Runtime Environment (stand-in)\n'


def run(argv: list[str]) -> int:
    threading.current_thread().name = "main"  # the JVM's main thread
    record = os.environ.get(RECORD)
    if record:  # tests read the command lines the wrapper built
        with open(record, "a") as handle:
            handle.write(json.dumps(argv) + "\n")
    if argv[:1] == ["-version"]:
        sys.stderr.write(VERSION)
        return 0
    properties: dict[str, str] = {}
    classpath: list[str] = []
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index]
        if option in ("-cp", "-classpath", "--class-path"):
            index += 1
            classpath = argv[index].split(os.pathsep)
        elif option.startswith("-D"):
            key, _, value = option[2:].partition("=")
            properties[key] = value
        elif not option.startswith("-X"):
            sys.stderr.write(f"java stand-in: the JVM option {option} is not modelled\n")
            return NOT_MODELLED
        index += 1
    if index == len(argv):
        sys.stderr.write("java stand-in: no main class\n")
        return NOT_MODELLED
    main_class, args = argv[index], argv[index + 1:]
    if main_class != START_CLASS:
        sys.stderr.write(f"java stand-in: only {START_CLASS} is modelled, not {main_class}\n")
        return NOT_MODELLED
    if not any(os.path.basename(jar).startswith(IMPORTER_JAR) and os.path.isfile(jar)
               for jar in classpath):
        sys.stderr.write(f"Error: Could not find or load main class {main_class}\n"
                         f"Caused by: java.lang.ClassNotFoundException: {main_class}\n")
        return 1
    return main(args, int(properties.get("omero.import.depth", "4")))


if __name__ == "__main__":
    try:
        status = run(sys.argv[1:])
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    flush_and_exit(status)
