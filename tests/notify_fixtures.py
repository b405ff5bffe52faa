"""Real receivers for the notification tests: an SMTP server (aiosmtpd) and an
HTTP server (http.server), both on loopback, both recording what they get."""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.helpers import free_port


class _Recorder:
    """aiosmtpd handler: refuses the addresses in ``refuse`` with 550, keeps the rest."""

    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.sink.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        # As a mail client reads it: SMTP's CRLF line ends become newlines.
        content = envelope.content.replace(b"\r\n", b"\n")
        message = message_from_bytes(content, policy=policy.default)
        with self.sink.lock:
            self.sink.received.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted"


@dataclass
class SmtpSink:
    port: int = field(default_factory=free_port)
    refuse: set[str] = field(default_factory=set)
    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: A server-side SSL context: offered by STARTTLS, or (``implicit``) from the start.
    tls_context: Any = None
    implicit: bool = False
    #: (user, password) that AUTH must give; None: no login.
    login: tuple[str, str] | None = None
    controller: Controller | None = None

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self.tls_context is not None:
            options["ssl_context" if self.implicit else "tls_context"] = self.tls_context
        if self.login is not None:
            options.update(authenticator=self._authenticate, auth_required=True)
            # aiosmtpd offers AUTH only after STARTTLS unless told that the
            # connection is safe already (implicit TLS is; smtp.py, ehlo).
            options["auth_require_tls"] = not self.implicit
        self.controller = Controller(_Recorder(self), hostname="127.0.0.1", port=self.port,
                                     **options)
        self.controller.start()

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, data: Any) -> AuthResult:
        given = (data.login.decode(), data.password.decode()) if isinstance(
            data, LoginPassword) else None
        return AuthResult(success=given == self.login, handled=False)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        with self.lock:
            return list(self.received)


@dataclass
class Request:
    path: str
    headers: Message  # case-insensitive, as HTTP headers are
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Answers POSTs with the statuses in ``answers`` (then 200); while ``gate``
    is clear, each request waits for it (a slow webhook)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.answers: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Semaphore(0)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(Request(self.path, self.headers, body))
                receiver.arrived.release()
                receiver.gate.wait(60)
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no such hook")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and its key (openssl), for STARTTLS."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key
