"""Throwaway TLS material made with the ``openssl`` command: a CA, and certificates it signs.

For tests of how clients verify brokers: a CA that signed nothing the broker presents, a server
certificate for a local TLS listener, a client certificate with its key.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}")


def make_ca(directory: Path, name: str = "throwaway-ca") -> Issued:
    """A self-signed CA valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_KEY, "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}"
    )
    return Issued(cert, key)


def issue(ca: Issued, directory: Path, name: str, hosts: tuple[str, ...] = ()) -> Issued:
    """A certificate signed by ``ca``, naming ``hosts`` (DNS names or IP addresses)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    request = directory / f"{name}.csr"
    _openssl("req", "-new", *_KEY, "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    extensions = directory / f"{name}.ext"
    names = [f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts]
    extensions.write_text(f"subjectAltName={','.join(names)}\n" if names else "\n")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", extensions,
    )  # fmt: skip
    return Issued(cert, key)
