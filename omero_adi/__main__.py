"""``python -m omero_adi …`` is the ``omero-adi`` command."""

import sys

from omero_adi.cli import main

sys.exit(main())
