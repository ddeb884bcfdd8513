"""Servers for the secure-connection tests, each on free loopback ports, stopped by the test.

- :func:`start_secure_redis`: redis-server with an ACL user (default user off) and/or TLS.
- :func:`start_secure_kafka`: Apache Kafka with its own SASL/SCRAM-SHA-512 and mutual-TLS
  listeners (no proxy: the broker's own security).
- :func:`tansu_behind_tls`: a Tansu broker reached only through a TLS-terminating proxy.
  Tansu 0.6 serves no TLS itself (``docs/tansu.md``); the proxy does what a TLS-terminating
  load balancer in front of a broker does, so the clients' TLS (CA check, host name check,
  client certificate) is real. Tansu advertises the proxy's address, so every connection a
  client opens after the bootstrap goes through TLS too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient, UserScramCredentialUpsertion

from streamcrm.services.apache_kafka import Listener, start_kafka
from streamcrm.services.embedded import RunningService, free_port, redis_server_binary, tansu_binary
from tests.tls import Pki

STARTUP_TIMEOUT_S = 20.0


def _started(service: RunningService, port: int) -> RunningService:
    """``service`` once it accepts TCP connections on ``port``; stopped if it never does."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            log = service.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return service
        time.sleep(0.05)
    service.stop()
    raise RuntimeError(f"{service.name} did not listen on port {port}")


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def start_secure_redis(
    log_dir: Path,
    *,
    acl_user: tuple[str, str] | None = None,
    tls: Pki | None = None,
    client_certificates: bool = False,
) -> RunningService:
    """A throw-away redis-server; its ``address`` is ``redis://`` or, with ``tls``, ``rediss://``.

    ``acl_user`` (name, password): the default user is switched off and only that user, with
    every permission, gets in. ``client_certificates``: TLS clients must present a certificate
    signed by the CA.
    """
    port = free_port()
    argv = [str(redis_server_binary()), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(log_dir), "--daemonize", "no"]
    if tls is None:
        argv += ["--port", str(port)]
        address = f"redis://127.0.0.1:{port}/0"
    else:
        argv += ["--port", "0", "--tls-port", str(port)]
        argv += ["--tls-cert-file", str(tls.server_cert), "--tls-key-file", str(tls.server_key)]
        argv += ["--tls-ca-cert-file", str(tls.ca_cert)]
        argv += ["--tls-auth-clients", "yes" if client_certificates else "no"]
        address = f"rediss://127.0.0.1:{port}/0"
    if acl_user is not None:
        name, password = acl_user
        argv += ["--user", "default", "off", "--user", name, "on", f">{password}"]
        argv += ["~*", "&*", "+@all"]
    log_path = log_dir / f"redis-{port}.log"
    process = _spawn(argv, log_path)
    return _started(RunningService("redis-server", address, process, log_path), port)


class _TlsServerSide:
    """The server's end of one TLS connection over an asyncio stream, through memory BIOs.

    asyncio's own TLS drops the alert that says why a handshake failed; a broker sends it
    (``certificate required``, ``unknown CA``), and clients name the cause only if they get it.
    """

    def __init__(
        self, context: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._reader, self._writer = reader, writer

    async def _flush(self) -> None:
        if pending := self._outgoing.read():
            self._writer.write(pending)
            await self._writer.drain()

    async def handshake(self) -> bool:
        """Complete the handshake; False (after sending the alert) if it failed."""
        while True:
            try:
                self._tls.do_handshake()
                await self._flush()
                return True
            except ssl.SSLWantReadError:
                await self._flush()
                if not (data := await self._reader.read(65536)):
                    return False
                self._incoming.write(data)
            except ssl.SSLError:
                await self._flush()  # the alert
                return False

    async def read(self) -> bytes:
        """Plain bytes from the client; b"" at its end."""
        while True:
            try:
                data = self._tls.read(65536)
                await self._flush()  # e.g. a key update
                return data
            except ssl.SSLWantReadError:
                if not (received := await self._reader.read(65536)):
                    return b""
                self._incoming.write(received)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    async def write(self, data: bytes) -> None:
        self._tls.write(data)
        await self._flush()

    def close(self) -> None:
        self._writer.close()


class TlsTerminatingProxy:
    """Accepts TLS on ``listen_port`` (client certificate required) and forwards the plain
    bytes to ``target_port``, both on 127.0.0.1, from an event loop in its own thread.

    ``pki`` gives the CA clients must be signed by and the server certificate; a refused client
    gets the TLS alert that says why, as from a broker (``_TlsServerSide``).
    """

    def __init__(self, listen_port: int, target_port: int, pki: Pki) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.connections = 0
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
        self._context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self._context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy")
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        listening = asyncio.start_server(self._forward, "127.0.0.1", self.listen_port)
        self._server = asyncio.run_coroutine_threadsafe(listening, self._loop).result(10)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        client = _TlsServerSide(self._context, client_reader, client_writer)
        try:
            if not await client.handshake():
                client.close()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            client.close()
            return

        async def to_upstream() -> None:
            try:
                while data := await client.read():
                    upstream_writer.write(data)
                    await upstream_writer.drain()
            finally:
                upstream_writer.close()

        async def to_client() -> None:
            try:
                while data := await upstream_reader.read(65536):
                    await client.write(data)
            finally:
                client.close()

        await asyncio.gather(to_upstream(), to_client(), return_exceptions=True)

    def stop(self) -> None:
        async def close_everything() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close_everything(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def tansu_behind_tls(log_dir: Path, pki: Pki) -> Iterator[TlsTerminatingProxy]:
    """Tansu (memory storage) on a hidden plain port, advertised and reached only through a
    mutual-TLS proxy; the bootstrap address is ``127.0.0.1:<proxy.listen_port>``."""
    broker_port, proxy_port = free_port(), free_port()
    argv = [str(tansu_binary()), "broker", "--storage-engine", "memory://tansu/"]
    argv += ["--listener-url", f"tcp://127.0.0.1:{broker_port}"]
    argv += ["--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}"]
    log_path = log_dir / "tansu.log"
    broker = _started(RunningService("tansu", "", _spawn(argv, log_path), log_path), broker_port)
    proxy = TlsTerminatingProxy(proxy_port, broker_port, pki)
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()
        broker.stop()


@dataclass(frozen=True)
class SecureKafka:
    """An Apache Kafka node with a SASL and a TLS client listener beside its PLAINTEXT one."""

    service: RunningService
    sasl: Listener
    """SASL_PLAINTEXT, SCRAM-SHA-512 only."""
    tls: Listener
    """SSL, client certificates required (``ssl.client.auth=required``)."""

    def add_scram_user(self, name: str, password: str) -> None:
        """Create (or update) a SCRAM-SHA-512 user through the Admin API
        (AlterUserScramCredentials), on the PLAINTEXT listener: the broker keeps SCRAM
        credentials in its KRaft metadata, so no user needs to exist at format time."""
        admin = KafkaAdminClient(bootstrap_servers=self.service.address)
        try:
            errors = admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(name, "SCRAM-SHA-512", password)]
            )
        finally:
            admin.close()
        if errors.get(name) is not None:
            raise RuntimeError(f"creating the SCRAM user {name} failed: {errors[name]}")


def start_secure_kafka(log_dir: Path, pki: Pki) -> SecureKafka:
    """Apache Kafka whose client listeners are PLAINTEXT (for the test's own admin work and
    the broker's inter-broker traffic), SASL_PLAINTEXT with SCRAM-SHA-512, and SSL with the
    server certificate of ``pki`` (PEM files: no keytool, no JKS) trusting only its CA for
    the client certificates it requires."""
    server_pem = log_dir / "kafka-server.pem"  # the key (PKCS#8) and its certificate
    server_pem.write_text(pki.server_key.read_text() + pki.server_cert.read_text())
    sasl = Listener("SASL", "SASL_PLAINTEXT", free_port())
    tls = Listener("TLS", "SSL", free_port())
    service = start_kafka(
        log_dir,
        listeners=(sasl, tls),
        properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.tls.ssl.keystore.type": "PEM",
            "listener.name.tls.ssl.keystore.location": str(server_pem),
            "listener.name.tls.ssl.truststore.type": "PEM",
            "listener.name.tls.ssl.truststore.location": str(pki.ca_cert),
            "listener.name.tls.ssl.client.auth": "required",
        },
    )
    return SecureKafka(service, sasl, tls)
