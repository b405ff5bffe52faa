"""Starting the double: an Ice communicator with IceSSL on one port, the
servant locator, and the HTTP control API beside it.

omero-py connects with ``ssl`` by default (omero/clients.py sets up IceSSL with
``IceSSL.VerifyPeer=0``), so the double listens on SSL with a self-signed
certificate made once per certificate directory.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import Ice
import omero
import omero.rtypes
from omero import ObjectFactoryRegistrar

from tests.omero_double import sessions
from tests.omero_double.data import PixelsService, QueryService, UpdateService
from tests.omero_double.dispatch import Faults, Locator
from tests.omero_double.tls import certificate
from tests.omero_double.world import World


class DoubleServer:
    """The Ice side of the double; :meth:`refuse` stops listening for a while."""

    def __init__(self, world: World, port: int, cert_dir: Path):
        self.world, self.port = world, port
        pem = certificate(cert_dir)
        init = Ice.InitializationData()
        init.properties = Ice.createProperties()
        for name, value in {
            "Ice.Plugin.IceSSL": "IceSSL:createIceSSL",
            "IceSSL.CertFile": str(pem),
            "IceSSL.VerifyPeer": "0", "IceSSL.Ciphers": "HIGH:ADH:@SECLEVEL=0",
            "Ice.ThreadPool.Server.Size": "4", "Ice.ThreadPool.Server.SizeMax": "32",
            "Ice.MessageSizeMax": "65536", "Ice.ACM.Server.Timeout": "0",
            "Ice.Warn.Connections": "0",
        }.items():
            init.properties.setProperty(name, value)
        self.communicator = Ice.initialize(init)
        # the model and rtypes classes, as omero.client registers them (omero/clients.py)
        ObjectFactoryRegistrar.registerObjectFactory(self.communicator, None)
        for factory in omero.rtypes.ObjectFactories.values():
            factory.register(self.communicator)
        self.faults = Faults(world)
        self.router = sessions.Router(world)
        services = {
            "omero.api.IAdmin": sessions.AdminService(world),
            "omero.api.IConfig": sessions.ConfigService(world),
            "omero.api.ISession": sessions.SessionService(world),
            "omero.api.IQuery": QueryService(world),
            "omero.api.IUpdate": UpdateService(world),
            "omero.api.IPixels": PixelsService(world),
        }
        self.locator = Locator(world, self.faults, self.router,
                               sessions.ServiceFactory(world), services)
        self.router.locator = self.locator
        self.locator.factory.locator = self.locator
        self.adapter: Any = None
        self._lock = threading.Lock()
        self.listen()

    def listen(self) -> None:
        with self._lock:
            if self.adapter is not None:
                return
            self.adapter = self.communicator.createObjectAdapterWithEndpoints(
                "OMERO.Double", f"ssl -h 127.0.0.1 -p {self.port}")
            self.adapter.addServantLocator(self.locator, "")
            self.adapter.activate()

    def refuse(self, seconds: float) -> None:
        """Stop listening (connections are refused, open ones are closed, every
        Glacier2 session is lost), and listen again after ``seconds``."""
        with self.locator.lock:  # first, so closing connections ends no OMERO session
            self.locator.connections.clear()
            self.locator.detached.clear()
        with self._lock:
            adapter, self.adapter = self.adapter, None
        if adapter is not None:
            adapter.destroy()
        timer = threading.Timer(seconds, self.listen)
        timer.daemon = True
        timer.start()

    def wait(self) -> None:
        self.communicator.waitForShutdown()

    def shutdown(self) -> None:
        self.communicator.shutdown()

