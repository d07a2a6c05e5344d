#!/usr/bin/env python3
"""Is a Kafka broker at HOST:PORT answering?

Used by deploy/local/kafka to decide that the local broker is ready: a port
that accepts connections is not enough (the socket opens before the broker
has joined its own KRaft quorum), so this sends a real MetadataRequest and
only succeeds if the answer lists at least one broker.

Standard library only: it runs before any virtualenv exists.

    kafka_ready.py [--timeout SECONDS] [--wait SECONDS] [-v] [HOST:PORT[,HOST:PORT...]]
                   [--security-protocol PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL]
                   [--cafile CA.pem] [--certfile CERT.pem --keyfile KEY.pem]
                   [--sasl-mechanism SCRAM-SHA-512|SCRAM-SHA-256|PLAIN]
                   [--sasl-username NAME] [--sasl-password-file FILE] [--env FILE]

A secured broker is probed the way its clients reach it: TLS verified against
the CA (hostname included), then SASL, then the MetadataRequest, so "ready"
means an authenticated metadata request succeeded. ``--env FILE`` reads the
TRUST_KAFKA_* lines of a principal's file (deploy/local/kafka writes one per
principal); explicit flags win over it. The password is never taken on the
command line (other users can read that): ``--sasl-password-file``, the
file given to ``--env``, or the environment variable KAFKA_READY_SASL_PASSWORD.

Exit status: 0 ready, 1 not ready (the reason goes to stderr), 2 bad usage.

Protocol notes. Requests are sent with request header v1, responses read
with response header v0, which is what all non-flexible API versions use.
The probe first asks ApiVersions v0 (every broker answers it), then sends
the highest Metadata version that both the broker and this script speak
(1..8, the non-flexible ones). Kafka 4 dropped several old API versions, so
hard-coding one version would break with some broker releases.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import secrets
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass

API_METADATA = 3
API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36
# SaslHandshake v1 and SaslAuthenticate v0..1 are the non-flexible versions
# (SaslAuthenticate v2 uses tagged fields); v1 of the handshake means the
# tokens travel in SaslAuthenticate requests rather than as raw frames.
SASL_HANDSHAKE_VERSION = 1
SASL_AUTHENTICATE_MIN, SASL_AUTHENTICATE_MAX = 0, 1
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# Metadata versions this probe can encode and parse: v1 added the rack and
# controller id, v2 the cluster id, v3 the throttle time, v4 the
# auto-creation flag; v9 switched to the flexible (tagged-field) encoding.
METADATA_MIN, METADATA_MAX = 1, 8
CLIENT_ID = "kafka-ready-probe"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class NotReady(Exception):
    """The broker did not give a usable answer."""


@dataclass(frozen=True)
class Security:
    """How to reach the broker: the protocol, and for SASL who logs in."""

    protocol: str = "PLAINTEXT"
    cafile: str | None = None
    certfile: str | None = None  # a client certificate, for listeners that require one
    keyfile: str | None = None
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass
class Broker:
    node_id: int
    host: str
    port: int


@dataclass
class Metadata:
    version: int
    brokers: list[Broker]
    cluster_id: str | None
    controller_id: int | None


class Reader:
    """Sequential decoder for the big-endian Kafka wire types."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _int(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise NotReady("truncated response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def int16(self) -> int:
        return self._int(">h")

    def int32(self) -> int:
        return self._int(">i")

    def int64(self) -> int:
        return self._int(">q")

    def bytes_(self) -> bytes:
        length = self.int32()
        if length < 0:
            return b""
        if self.pos + length > len(self.data):
            raise NotReady("truncated response")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw

    def nullable_string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        if self.pos + length > len(self.data):
            raise NotReady("truncated response")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise NotReady("unexpected null string in response")
        return value


def encode_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">h", len(raw)) + raw


class Connection:
    def __init__(self, host: str, port: int, timeout: float, security: Security) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        if security.tls:
            # Verified like a client would: the CA, and the host name (or IP) in the SAN.
            context = ssl.create_default_context(cafile=security.cafile)
            if security.certfile:
                context.load_cert_chain(security.certfile, security.keyfile)
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, api_key: int, api_version: int, body: bytes) -> Reader:
        self.correlation_id += 1
        header = struct.pack(">hhi", api_key, api_version, self.correlation_id)
        payload = header + encode_string(CLIENT_ID) + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)

        (size,) = struct.unpack(">i", self._recv_exact(4))
        if not 4 <= size <= MAX_RESPONSE_BYTES:
            raise NotReady(f"implausible response size {size}")
        reader = Reader(self._recv_exact(size))
        correlation_id = reader.int32()
        if correlation_id != self.correlation_id:
            raise NotReady(
                f"correlation id mismatch: sent {self.correlation_id}, got {correlation_id}"
            )
        return reader

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise NotReady("connection closed by broker")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def api_versions(conn: Connection) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions answer: api key -> (lowest, highest) version.

    ApiVersions is the one request a broker answers before authentication.
    """
    reader = conn.request(API_API_VERSIONS, 0, b"")
    error_code = reader.int16()
    if error_code != 0:
        raise NotReady(f"ApiVersions error code {error_code}")
    versions = {}
    for _ in range(reader.int32()):
        api_key, min_version, max_version = reader.int16(), reader.int16(), reader.int16()
        versions[api_key] = (min_version, max_version)
    return versions


def pick_version(
    versions: dict[int, tuple[int, int]], api_key: int, name: str, low: int, high: int
) -> int:
    """The highest version of an API that both the broker and this probe speak."""
    if api_key not in versions:
        raise NotReady(f"broker does not list the {name} API")
    min_version, max_version = versions[api_key]
    if max(min_version, low) > min(max_version, high):
        raise NotReady(
            f"broker speaks {name} v{min_version}..v{max_version}, this probe only v{low}..v{high}"
        )
    return min(max_version, high)


def metadata_version(versions: dict[int, tuple[int, int]]) -> int:
    """Pick the Metadata version to use from the broker's ApiVersions answer."""
    return pick_version(versions, API_METADATA, "Metadata", METADATA_MIN, METADATA_MAX)


# --- SASL --------------------------------------------------------------------


def _scram_name(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class Scram:
    """The client side of SCRAM (RFC 5802), as Kafka's SCRAM-SHA-256/512 use it."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.digest = "sha512" if mechanism == "SCRAM-SHA-512" else "sha256"
        self.password = password.encode("utf-8")
        self.nonce = base64.b64encode(secrets.token_bytes(24)).decode("ascii")
        self.first_bare = f"n={_scram_name(username)},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode("utf-8")

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.digest).digest()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8")
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        if "e" in fields:
            raise NotReady(f"SCRAM refused: {fields['e']}")
        nonce, salt, iterations = fields.get("r", ""), fields.get("s"), fields.get("i", "")
        if not nonce.startswith(self.nonce) or salt is None or not iterations.isdigit():
            raise NotReady(f"unexpected SCRAM server message {text!r}")
        salted = hashlib.pbkdf2_hmac(
            self.digest, self.password, base64.b64decode(salt), int(iterations)
        )
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.digest, client_key).digest()
        without_proof = f"c=biws,r={nonce}"  # biws: base64 of "n,,", no channel binding
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode()

    def verify(self, server_final: bytes) -> None:
        text = server_final.decode("utf-8")
        if text.startswith("e="):
            raise NotReady(f"SCRAM refused: {text[2:]}")
        if not text.startswith("v=") or not hmac.compare_digest(
            base64.b64decode(text[2:]), self.server_signature
        ):
            raise NotReady("the broker's SCRAM signature is wrong: not the broker we expected")


def sasl_authenticate(
    conn: Connection, versions: dict[int, tuple[int, int]], security: Security
) -> None:
    """SaslHandshake, then the mechanism's exchange in SaslAuthenticate requests."""
    if security.username is None or security.password is None:
        raise NotReady(f"{security.protocol} needs a SASL username and password")
    pick_version(
        versions,
        API_SASL_HANDSHAKE,
        "SaslHandshake",
        SASL_HANDSHAKE_VERSION,
        SASL_HANDSHAKE_VERSION,
    )
    auth_version = pick_version(
        versions,
        API_SASL_AUTHENTICATE,
        "SaslAuthenticate",
        SASL_AUTHENTICATE_MIN,
        SASL_AUTHENTICATE_MAX,
    )
    reader = conn.request(
        API_SASL_HANDSHAKE, SASL_HANDSHAKE_VERSION, encode_string(security.mechanism)
    )
    error_code = reader.int16()
    enabled = [reader.string() for _ in range(reader.int32())]
    if error_code != 0:
        raise NotReady(
            f"the broker does not take SASL mechanism {security.mechanism} "
            f"(error code {error_code}; it takes {', '.join(enabled) or 'none'})"
        )

    def exchange(token: bytes) -> bytes:
        reader = conn.request(
            API_SASL_AUTHENTICATE, auth_version, struct.pack(">i", len(token)) + token
        )
        error_code, message = reader.int16(), reader.nullable_string()
        answer = reader.bytes_()
        if auth_version >= 1:
            reader.int64()  # session_lifetime_ms
        if error_code != 0:
            raise NotReady(
                f"authentication as {security.username} failed (error code {error_code}: "
                f"{message or 'no message'})"
            )
        return answer

    if security.mechanism == "PLAIN":
        exchange(b"\0" + security.username.encode() + b"\0" + security.password.encode())
        return
    scram = Scram(security.mechanism, security.username, security.password)
    scram.verify(exchange(scram.final(exchange(scram.first()))))


def fetch_metadata(conn: Connection, version: int) -> Metadata:
    # An empty (not null) topic array asks for brokers only, no topics.
    body = struct.pack(">i", 0)
    if version >= 4:
        body += struct.pack(">?", False)  # allow_auto_topic_creation
    if version >= 8:
        body += struct.pack(">??", False, False)  # include cluster/topic authorized operations

    reader = conn.request(API_METADATA, version, body)
    if version >= 3:
        reader.int32()  # throttle_time_ms
    brokers = []
    for _ in range(reader.int32()):
        node_id, host, port = reader.int32(), reader.string(), reader.int32()
        reader.nullable_string()  # rack
        brokers.append(Broker(node_id, host, port))
    cluster_id = reader.nullable_string() if version >= 2 else None
    controller_id = reader.int32()
    return Metadata(version, brokers, cluster_id, controller_id)


def probe(host: str, port: int, timeout: float, security: Security | None = None) -> Metadata:
    security = security or Security()
    try:
        conn = Connection(host, port, timeout, security)
    except ssl.SSLError as exc:
        raise NotReady(f"TLS with {host}:{port} failed: {exc.reason or exc}") from exc
    except OSError as exc:
        raise NotReady(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    try:
        versions = api_versions(conn)
        if security.sasl:
            sasl_authenticate(conn, versions, security)
        metadata = fetch_metadata(conn, metadata_version(versions))
    except TimeoutError as exc:
        raise NotReady(f"{host}:{port} did not answer within {timeout:g}s") from exc
    except OSError as exc:
        raise NotReady(f"{host}:{port}: {exc.strerror or exc}") from exc
    finally:
        conn.close()
    if not metadata.brokers:
        raise NotReady(f"{host}:{port} answered, but lists no brokers yet")
    return metadata


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


DEFAULT_BOOTSTRAP = "127.0.0.1:19092"


def read_env_file(path: str) -> dict[str, str]:
    """KEY=value lines (blank lines and # comments skipped, values may be quoted)."""
    values = {}
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip().removeprefix("export ").strip()] = value
    return values


def security_from(args: argparse.Namespace) -> tuple[Security, str | None]:
    """The security options (flags over --env over defaults) and --env's bootstrap address."""
    env = read_env_file(args.env) if args.env else {}
    password = env.get("TRUST_KAFKA_SASL_PASSWORD") or os.environ.get("KAFKA_READY_SASL_PASSWORD")
    if args.sasl_password_file:
        with open(args.sasl_password_file, encoding="utf-8") as file:
            password = file.readline().rstrip("\r\n")
    protocol = args.security_protocol or env.get("TRUST_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT"
    mechanism = args.sasl_mechanism or env.get("TRUST_KAFKA_SASL_MECHANISM") or "SCRAM-SHA-512"
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"unknown security protocol {protocol!r}")
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
    security = Security(
        protocol=protocol,
        cafile=args.cafile or env.get("TRUST_KAFKA_SSL_CAFILE") or None,
        certfile=args.certfile or env.get("TRUST_KAFKA_SSL_CERTFILE") or None,
        keyfile=args.keyfile or env.get("TRUST_KAFKA_SSL_KEYFILE") or None,
        mechanism=mechanism,
        username=args.sasl_username or env.get("TRUST_KAFKA_SASL_USERNAME") or None,
        password=password or None,
    )
    if security.sasl and (security.username is None or security.password is None):
        raise ValueError(f"{protocol} needs --sasl-username and a password")
    return security, env.get("TRUST_KAFKA_BOOTSTRAP_SERVERS") or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Exit 0 if a Kafka broker answers a MetadataRequest, 1 otherwise."
    )
    parser.add_argument(
        "bootstrap",
        nargs="?",
        help=f"HOST:PORT, or several separated by commas (default: from --env, else "
        f"{DEFAULT_BOOTSTRAP})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds allowed for one connect + request round trip (default %(default)s)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="keep retrying for up to this many seconds before giving up (default: one try)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="describe the answer")
    parser.add_argument(
        "--security-protocol",
        choices=SECURITY_PROTOCOLS,
        help="how to reach the broker (default PLAINTEXT)",
    )
    parser.add_argument("--cafile", help="CA certificate (PEM) that signed the broker's")
    parser.add_argument("--certfile", help="client certificate (PEM), if the listener wants one")
    parser.add_argument("--keyfile", help="its key (PEM, unencrypted)")
    parser.add_argument(
        "--sasl-mechanism", choices=SASL_MECHANISMS, help="SASL mechanism (default SCRAM-SHA-512)"
    )
    parser.add_argument("--sasl-username", help="SASL user")
    parser.add_argument("--sasl-password-file", help="file whose first line is the password")
    parser.add_argument(
        "--env",
        help="a file of TRUST_KAFKA_*=value lines to take all of the above (and the address) from",
    )
    args = parser.parse_args(argv)
    try:
        security, env_bootstrap = security_from(args)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if args.bootstrap is None:
        args.bootstrap = env_bootstrap or DEFAULT_BOOTSTRAP

    try:
        addresses = [parse_address(part) for part in args.bootstrap.split(",") if part.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    if not addresses:
        parser.error("no address given")

    deadline = time.monotonic() + max(args.wait, 0.0)
    while True:
        errors = []
        for host, port in addresses:
            try:
                metadata = probe(host, port, args.timeout, security)
            except NotReady as exc:
                errors.append(str(exc))
                continue
            if args.verbose:
                brokers = ", ".join(f"{b.node_id}@{b.host}:{b.port}" for b in metadata.brokers)
                print(
                    f"ready: {host}:{port} (Metadata v{metadata.version}, "
                    f"cluster {metadata.cluster_id}, controller {metadata.controller_id}, "
                    f"brokers {brokers})"
                )
            return 0
        if time.monotonic() + 0.5 >= deadline:
            print("not ready: " + "; ".join(errors), file=sys.stderr)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
