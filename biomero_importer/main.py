"""``python -m biomero_importer.main``: BIOMERO.importer's entry point; starts the daemon."""

import sys

from omero_adi.main import main

if __name__ == "__main__":
    sys.exit(main())
