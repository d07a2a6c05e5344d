"""Who may read and who may change, over HTTP: bearer tokens, compared in constant time.

Two tokens, both optional:

- ``TRUST_API_READ_TOKEN`` guards every read of agents and configuration (scores, explanations
  with their signal sources, the agents at risk, the health report, the configuration). Unset,
  reads are open, as a worker bound to loopback needs; the worker warns at start when it listens
  on another address without one.
- ``TRUST_ADMIN_TOKEN`` guards changes (configuration, reinstatement), and grants reads too, so an
  operator needs one token. Unset, changes over HTTP are refused.

Left open on purpose: ``/healthz`` and ``/readyz`` (probes must reach them without secrets; they
say nothing about any agent), ``/metrics`` (labels are dimensions, topics, partitions and kinds of
memory: no DID and no score of any agent), and ``/openapi.json`` (the API's shape only).

A missing or wrong token for a read is a 401 (``WWW-Authenticate: Bearer``); for a change,
missing is 401 and wrong is 403, as before.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from pydantic import SecretStr

BEARER = "Bearer "
#: Sent with every 401, as RFC 6750 asks.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="trust-streams"'}


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    message: str


def _matches(presented: bytes, token: str) -> bool:
    # compare_digest takes the same time whatever the first differing byte is.
    return bool(token) and hmac.compare_digest(presented, token.encode())


def _presented(header: str | None) -> bytes | None:
    if not header or not header.startswith(BEARER):
        return None
    return header[len(BEARER) :].strip().encode()


@dataclass(frozen=True, slots=True)
class Tokens:
    read: SecretStr
    admin: SecretStr

    @property
    def reads_protected(self) -> bool:
        return bool(self.read.get_secret_value())

    def check_read(self, header: str | None) -> Denied | None:
        """None when the request may read; else why not."""
        if not self.reads_protected:
            return None
        presented = _presented(header)
        if presented is None:
            return Denied(401, "reading needs 'Authorization: Bearer <TRUST_API_READ_TOKEN>'")
        # Both compared, so the time taken does not tell which token came close.
        read_ok = _matches(presented, self.read.get_secret_value())
        admin_ok = _matches(presented, self.admin.get_secret_value())
        if read_ok or admin_ok:
            return None
        return Denied(401, "the bearer token is not valid for reading")

    def check_admin(self, header: str | None) -> Denied | None:
        """None when the request may change configuration or reinstate; else why not."""
        presented = _presented(header)
        if presented is None:
            return Denied(401, "this change needs 'Authorization: Bearer <TRUST_ADMIN_TOKEN>'")
        admin = self.admin.get_secret_value()
        if not admin:
            return Denied(403, "changes are disabled: no TRUST_ADMIN_TOKEN is set on this worker")
        if not _matches(presented, admin):
            return Denied(403, "the bearer token is not valid")
        return None
