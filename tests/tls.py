"""Throw-away certificates for tests: a CA, a server certificate (for 127.0.0.1 / localhost
unless told otherwise) and a client certificate, all made with the ``openssl`` command into a
directory; and password-protected copies of keys.

EC P-256 keys keep it fast (a few milliseconds each). Nothing here is fit for production.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LOOPBACK_NAMES = ("IP:127.0.0.1", "DNS:localhost")
SERVER_EXTENSIONS = """\
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {names}
"""
CLIENT_EXTENSIONS = """\
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""


@dataclass(frozen=True)
class Pki:
    """Paths of one CA and the certificates it signed (PEM files)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def _signed_certificate(
    directory: Path, name: str, common_name: str, extensions: str, ca: tuple[Path, Path]
) -> tuple[Path, Path]:
    key, request, cert = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt"))
    extensions_file = directory / f"{name}.ext"
    extensions_file.write_text(extensions)
    _new_key(key)
    _openssl("req", "-new", "-key", key, "-subj", f"/CN={common_name}", "-out", request)
    ca_cert, ca_key = ca
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "2", "-extfile", extensions_file, "-out", cert,
    )  # fmt: skip
    return cert, key


def make_pki(
    directory: Path, name: str = "test", server_names: tuple[str, ...] = LOOPBACK_NAMES
) -> Pki:
    """A fresh CA in ``directory``, and a server and a client certificate it signed; the
    server certificate holds ``server_names`` (``IP:...`` or ``DNS:...``)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / f"{name}-ca.key", directory / f"{name}-ca.crt"
    _new_key(ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", ca_key, "-subj", f"/CN={name} test CA", "-days", "2",
        "-out", ca_cert,
    )  # fmt: skip
    server_cert, server_key = _signed_certificate(
        directory,
        f"{name}-server",
        server_names[0].partition(":")[2],
        SERVER_EXTENSIONS.format(names=", ".join(server_names)),
        (ca_cert, ca_key),
    )
    client_cert, client_key = _signed_certificate(
        directory, f"{name}-client", "streamcrm", CLIENT_EXTENSIONS, (ca_cert, ca_key)
    )
    return Pki(ca_cert, server_cert, server_key, client_cert, client_key)


def encrypted_key(key: Path, password: str, copy: Path) -> Path:
    """``copy``: ``key`` encrypted (AES-256, PKCS#8) with ``password``."""
    _openssl("pkey", "-in", key, "-aes256", "-passout", f"pass:{password}", "-out", copy)
    return copy
