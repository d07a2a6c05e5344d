"""The secured local broker (``deploy/local/kafka start --secure``) and its principals, for tests.

The broker is started for the session when it is not running (and stopped afterwards, unless it
was running before or ``TRUST_TESTS_KEEP_BROKER=1``), exactly as :mod:`tests.support.broker` does
for the plain one. A broker that cannot be had is an error, never a skip.

Each principal's connection settings are read from the file the script writes for it
(``.local/kafka-secure/principals/<name>.env``), and turned into plain aiokafka options here,
independently of the service's own client builder, so that what these tests prove about the
broker does not depend on the code under test.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from aiokafka.helpers import create_ssl_context

from .broker import LOCAL_BROKER, REPO_ROOT, BrokerUnavailable, reachable

SECURE_HOME = REPO_ROOT / ".local" / "kafka-secure"
ACLS_SCRIPT = REPO_ROOT / "deploy" / "acls.py"


@cache
def acls_module() -> ModuleType:
    """``deploy/acls.py`` (a script, not a package module), imported by its path."""
    spec = importlib.util.spec_from_file_location("deploy_acls", ACLS_SCRIPT)
    assert spec is not None and spec.loader is not None, ACLS_SCRIPT
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Principal:
    """One principal's ``TRUST_KAFKA_*`` settings, as the broker script wrote them."""

    name: str
    env: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return self.env["TRUST_KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def password(self) -> str:
        return self.env["TRUST_KAFKA_SASL_PASSWORD"]

    @property
    def cafile(self) -> str:
        return self.env["TRUST_KAFKA_SSL_CAFILE"]

    def client_options(self, *, password: str | None = None) -> dict[str, Any]:
        """aiokafka options that log in as this principal (with another password if given)."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.env["TRUST_KAFKA_SECURITY_PROTOCOL"],
            "ssl_context": create_ssl_context(cafile=self.cafile),
            "sasl_mechanism": self.env["TRUST_KAFKA_SASL_MECHANISM"],
            "sasl_plain_username": self.env["TRUST_KAFKA_SASL_USERNAME"],
            "sasl_plain_password": self.password if password is None else password,
        }


@dataclass(frozen=True)
class SecureBroker:
    address: str
    home: Path
    principals: dict[str, Principal]

    def principal(self, name: str) -> Principal:
        assert name in self.principals, f"no principal {name!r}; have {sorted(self.principals)}"
        return self.principals[name]

    @property
    def admin(self) -> Principal:
        return self.principal("admin")

    def env_file(self, name: str) -> Path:
        return self.home / "principals" / f"{name}.env"


def read_principals(home: Path) -> dict[str, Principal]:
    folder = home / "principals"
    return {
        path.stem: Principal(path.stem, read_env_file(path))
        for path in sorted(folder.glob("*.env"))
    }


def secure_broker(command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOCAL_BROKER), command, "--secure"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def provide_secure_broker() -> Iterator[SecureBroker]:
    """The secured local broker for a session: started if need be, with every principal."""
    was_running = secure_broker("status", timeout=60).returncode == 0
    started = secure_broker("start")
    if started.returncode != 0:
        raise BrokerUnavailable(
            f"deploy/local/kafka start --secure failed with exit {started.returncode}:\n"
            f"{started.stderr[-3000:]}"
        )
    address = started.stdout.strip().splitlines()[-1]
    if not reachable(address):
        raise BrokerUnavailable(f"the secured broker reported {address!r} but does not answer")
    principals = read_principals(SECURE_HOME)
    wanted = set(acls_module().USERS)
    if not wanted <= principals.keys():
        raise BrokerUnavailable(
            f"principal files missing under {SECURE_HOME / 'principals'}: "
            f"{sorted(wanted - principals.keys())}"
        )
    try:
        yield SecureBroker(address, SECURE_HOME, principals)
    finally:
        if not was_running and os.environ.get("TRUST_TESTS_KEEP_BROKER") != "1":
            secure_broker("stop", timeout=120)
