"""The double's self-signed SSL certificate (omero-py connects with IceSSL and
``IceSSL.VerifyPeer=0``, so any certificate will do)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def certificate(cert_dir: Path) -> Path:
    """One PEM file with a key and its certificate (``IceSSL.CertFile`` reads both;
    a separate ``IceSSL.KeyFile`` is deprecated), made the first time."""
    both = cert_dir / "key-and-cert.pem"
    if not both.exists():
        cert_dir.mkdir(parents=True, exist_ok=True)
        key, cert = cert_dir / "key.pem", cert_dir / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=omero-double", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True)
        tmp = both.with_suffix(".tmp")
        tmp.write_bytes(key.read_bytes() + cert.read_bytes())
        tmp.replace(both)
    return both
