"""Turning a validated order into OMERO images: preprocessing, import, annotation."""
