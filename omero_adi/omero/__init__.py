"""The OMERO boundary: every call to the OMERO server goes through here."""
