"""A throwaway certificate authority and a server certificate for 127.0.0.1, made with openssl."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXTENSIONS = (
    "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature\n"
    "extendedKeyUsage = serverAuth\n"
)


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate a client trusts
    cert: Path  # the server's certificate, signed by the CA
    key: Path  # its private key


def make_certificates(directory: Path) -> Certificates:
    """A CA and a server certificate valid for ``127.0.0.1`` and ``localhost`` for two days."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key = directory / "server.pem", directory / "server.key"
    request = directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(_SERVER_EXTENSIONS)
    _openssl("req", "-x509", *_EC, "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=fastchat test CA")  # fmt: skip
    _openssl("req", "-new", *_EC, "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", extensions)  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
