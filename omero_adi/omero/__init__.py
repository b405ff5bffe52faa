"""The OMERO boundary: every call to the OMERO server goes through here.

:mod:`.boundary` declares what the daemon needs from a server (a Protocol and
typed results); :mod:`.blitz` implements it with omero-py and ezomero, which
are imported only when an order or a check really talks to OMERO.
"""
