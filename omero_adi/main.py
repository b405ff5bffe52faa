"""``python -m omero_adi.main``: the existing image's entry point; starts the daemon.

Reads ``config/settings.yml`` relative to the working directory, as before.
"""

import sys

from omero_adi.cli import main as cli_main


def main() -> int:
    return cli_main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
