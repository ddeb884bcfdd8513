"""The client's side of a SASL login, as bytes: PLAIN (RFC 4616) and SCRAM (RFC 5802,
SCRAM-SHA-256 and SCRAM-SHA-512).

The worker's start-up check (:mod:`streamcrm.services.connections`) logs in with these
before Faust starts, so a wrong user name or password is named at once instead of showing
as a client that cannot bootstrap. The Kafka clients (kafka-python, aiokafka) keep their own
SASL code for their connections; these are a few dozen lines rather than an import from a
client library's private modules.

A login is a conversation: :meth:`SaslLogin.first` is sent, each server answer goes to
:meth:`SaslLogin.answer`, which returns the next message or ``None`` when the login is done.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Protocol


class SaslLogin(Protocol):
    """One login's messages (client to server)."""

    def first(self) -> bytes:
        """The first message."""
        ...

    def answer(self, server_message: bytes) -> bytes | None:
        """The reply to the server's message, or ``None``: the login is over. Raises
        :class:`ValueError` when the server's message is not what the mechanism expects."""
        ...


class PlainLogin:
    """PLAIN: the user name and password in one message.

    >>> PlainLogin("alice", "s3cret").first()
    b'\\x00alice\\x00s3cret'
    """

    def __init__(self, username: str, password: str) -> None:
        self._message = b"\0" + username.encode() + b"\0" + password.encode()

    def first(self) -> bytes:
        return self._message

    def answer(self, server_message: bytes) -> bytes | None:
        return None


SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class ScramLogin:
    """SCRAM: a salted challenge and response; the password itself is never sent, and the
    server proves that it knows the user's credentials too.

    The RFC 7677 example (SCRAM-SHA-256, user "user", password "pencil"):

    >>> login = ScramLogin("user", "pencil", "SCRAM-SHA-256", nonce="rOprNGfwEbeRWgbNEkqO")
    >>> login.first()
    b'n,,n=user,r=rOprNGfwEbeRWgbNEkqO'
    >>> login.answer(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    ...              b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    b'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ='
    >>> login.answer(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") is None
    True
    """

    def __init__(self, username: str, password: str, mechanism: str, nonce: str = "") -> None:
        self._hash = SCRAM_HASHES[mechanism]
        self._password = password.encode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self._nonce = nonce or secrets.token_urlsafe(24)
        self._first_bare = f"n={name},r={self._nonce}".encode()
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        return b"n,," + self._first_bare

    def answer(self, server_message: bytes) -> bytes | None:
        fields = _fields(server_message)
        if "e" in fields:
            raise ValueError(f"the server ended the login: {fields['e']}")
        if self._server_signature is not None:  # server-final: check its proof, done
            if not hmac.compare_digest(base64.b64decode(fields["v"]), self._server_signature):
                raise ValueError("the server's signature does not match: not the real server?")
            return None
        nonce = fields.get("r", "")
        if not nonce.startswith(self._nonce):
            raise ValueError("the server's nonce does not extend the client's")
        salted = hashlib.pbkdf2_hmac(
            self._hash, self._password, base64.b64decode(fields["s"]), int(fields["i"])
        )
        final_bare = f"c=biws,r={nonce}".encode()
        auth_message = b",".join((self._first_bare, server_message, final_bare))
        client_key = self._hmac(salted, b"Client Key")
        signature = self._hmac(hashlib.new(self._hash, client_key).digest(), auth_message)
        proof = bytes(k ^ s for k, s in zip(client_key, signature, strict=True))
        self._server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return final_bare + b",p=" + base64.b64encode(proof)

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()


def _fields(message: bytes) -> dict[str, str]:
    return dict(
        part.split("=", 1) for part in message.decode(errors="replace").split(",") if "=" in part
    )


def sasl_login(mechanism: str, username: str, password: str) -> SaslLogin:
    """The login for ``mechanism`` (``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``)."""
    if mechanism == "PLAIN":
        return PlainLogin(username, password)
    return ScramLogin(username, password, mechanism)
