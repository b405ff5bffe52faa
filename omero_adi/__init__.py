"""omero-adi: the automated data import daemon for OMERO."""

__version__ = "1.0.0.dev0"
