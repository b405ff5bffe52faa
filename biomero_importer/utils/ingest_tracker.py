"""``from biomero_importer.utils.ingest_tracker import …``, as today's OMERO.biomero does.

Everything :mod:`omero_adi.utils.ingest_tracker` has, under BIOMERO.importer's name.
"""

from omero_adi.utils.ingest_tracker import *  # noqa: F401,F403
from omero_adi.utils.ingest_tracker import __all__  # noqa: F401
