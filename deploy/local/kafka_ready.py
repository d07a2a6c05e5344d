#!/usr/bin/env python3
"""Is a Kafka broker at HOST:PORT answering?

Used by deploy/local/kafka to decide that the local broker is ready: a port
that accepts connections is not enough (the socket opens before the broker
has joined its own KRaft quorum), so this sends a real MetadataRequest and
only succeeds if the answer lists at least one broker.

Standard library only: it runs before any virtualenv exists.

    kafka_ready.py [--timeout SECONDS] [--wait SECONDS] [-v] [HOST:PORT[,HOST:PORT...]]

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
import socket
import struct
import sys
import time
from dataclasses import dataclass

API_METADATA = 3
API_API_VERSIONS = 18
# Metadata versions this probe can encode and parse: v1 added the rack and
# controller id, v2 the cluster id, v3 the throttle time, v4 the
# auto-creation flag; v9 switched to the flexible (tagged-field) encoding.
METADATA_MIN, METADATA_MAX = 1, 8
CLIENT_ID = "kafka-ready-probe"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class NotReady(Exception):
    """The broker did not give a usable answer."""


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
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
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


def metadata_version(conn: Connection) -> int:
    """Pick the Metadata version to use from the broker's ApiVersions answer."""
    reader = conn.request(API_API_VERSIONS, 0, b"")
    error_code = reader.int16()
    if error_code != 0:
        raise NotReady(f"ApiVersions error code {error_code}")
    for _ in range(reader.int32()):
        api_key, min_version, max_version = reader.int16(), reader.int16(), reader.int16()
        if api_key == API_METADATA:
            low, high = max(min_version, METADATA_MIN), min(max_version, METADATA_MAX)
            if low > high:
                raise NotReady(
                    f"broker speaks Metadata v{min_version}..v{max_version}, "
                    f"this probe only v{METADATA_MIN}..v{METADATA_MAX}"
                )
            return high
    raise NotReady("broker does not list the Metadata API")


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


def probe(host: str, port: int, timeout: float) -> Metadata:
    try:
        conn = Connection(host, port, timeout)
    except OSError as exc:
        raise NotReady(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    try:
        metadata = fetch_metadata(conn, metadata_version(conn))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Exit 0 if a Kafka broker answers a MetadataRequest, 1 otherwise."
    )
    parser.add_argument(
        "bootstrap",
        nargs="?",
        default="127.0.0.1:19092",
        help="HOST:PORT, or several separated by commas (default %(default)s)",
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
    args = parser.parse_args(argv)

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
                metadata = probe(host, port, args.timeout)
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
