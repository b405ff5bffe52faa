"""Alembic migrations of omero-adi (installed as ``omero_adi.migrations``)."""
