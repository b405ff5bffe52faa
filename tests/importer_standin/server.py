"""The importer's calls to the server for one fileset, made to the OMERO double's
control API (tests/omero_double/README.md, "The server half of an import"):

- :func:`import_fileset`: ``ManagedRepositoryPrx.importFileset`` (ome/omero-blitz
  ``ImportLibrary.createImport``): the server saves the Fileset and its entries
  and returns the import process (``POST /fileset``);
- :meth:`Process.transfer`: one used file's ``ln_s`` transfer, the link and the
  server's ``checkTarget`` read through it (``POST /transfer``);
- :meth:`Process.verify_and_import`: ``verifyUpload`` and the server's import
  process, until its response (``POST /import`` with ``fileset``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.importer_standin.candidates import Container
from tests.importer_standin.monitor import Imported
from tests.importer_standin.paths import client_path


class ServerRefused(Exception):
    """The call failed: ``kind`` names the omero or Ice exception, as the double says."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message

    @property
    def server_error(self) -> bool:
        """An ``omero.ServerError`` (whose message ``Error on import`` repeats), not an
        Ice local exception."""
        return not self.kind.startswith("Ice.")


def control_url() -> str:
    """The double's control API: ``OMERO_DOUBLE_CONTROL``, else from its ``double.json``."""
    url = os.environ.get("OMERO_DOUBLE_CONTROL")
    if url:
        return url
    state = os.environ["OMERO_DOUBLE_STATE"]
    with open(os.path.join(state, "double.json")) as handle:
        return str(json.load(handle)["control_url"])


def _post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        control_url() + path, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as exc:
        failure = json.load(exc)
        raise ServerRefused(str(failure.get("error")), str(failure.get("message", ""))) from exc
    except OSError as exc:  # the server went away: Ice would say ConnectionLostException
        raise ServerRefused("Ice.ConnectionLostException", str(exc)) from exc


@dataclass
class Process:
    """``ImportProcessPrx``: the server's side of one fileset's import."""

    key: str
    fileset: int

    def transfer(self, index: int) -> None:
        _post("/transfer", {"session": self.key, "fileset": self.fileset, "index": index})

    def verify_and_import(self, target: dict[str, Any] | None, container: Container,
                          fail: str | None = None) -> Imported:
        """The import's response; with ``fail``, the server's import process fails."""
        body: dict[str, Any] = {
            "session": self.key, "fileset": self.fileset, "target": target,
            "kind": "plate" if container.is_spw else "image",
            "images": container.sample.count, "name": os.path.basename(container.file),
        }
        if fail is not None:
            body["fail"] = fail
        answer = _post("/import", body)
        return Imported(answer["fileset"], list(answer["images"]), list(answer["plates"]))


def import_fileset(key: str, container: Container) -> Process:
    """``importFileset``: the Fileset and its entries exist on the server from here on."""
    answer = _post("/fileset", {
        "session": key, "name": os.path.basename(container.file),
        "files": [{"path": path, "client_path": client_path(path)}
                  for path in container.used_files]})
    return Process(key, int(answer["fileset"]))
