"""An OMERO server double that speaks Ice: the real omero-py, BlitzGateway and
ezomero talk to it over TCP/SSL, unchanged. Test-only; see tests/omero_double/README.md
and docs/omero.md "What was tested against what".

Modules: ``world`` (the state and the permission rules), ``dispatch`` (the
servant locator: sessions, counts, faults, unknown calls), ``sessions``
(Glacier2 router, ServiceFactory, ISession, IAdmin, IConfig), ``data`` and
``hql`` (IQuery, IUpdate, IPixels), ``convert`` (records as omero.model
objects), ``control`` (the HTTP control API), ``imports`` (the server half
of an import, behind ``POST /fileset``, ``/transfer`` and ``/import``),
``server`` (start-up), ``fixture`` (the pytest fixture).
"""
