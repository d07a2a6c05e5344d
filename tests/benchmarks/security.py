"""Throughput over SASL_SSL beside plaintext, in one run: what authentication and TLS cost.

    python -m tests.benchmarks.security [--signals N] [--agents A] [--quick] [--out-dir DIR]

The same backlog (default 500,000 signals over 10,000 agents) is produced to fresh topics on the
plain broker (KAFKA_BOOTSTRAP_SERVERS, or the local one) and on the secured local broker
(``deploy/local/kafka start --secure``: SASL_SSL, SCRAM-SHA-512), and on each in turn, never both
at once, measured as the throughput scenario measures it (its functions, unchanged):

1. a raw aiokafka consumer reading the backlog (the client's ceiling);
2. one real worker (subprocess) applying it with state, changelog and window emission, timed
   from its first applied signal to its last.

On the secured broker, ``admin`` creates and fills the topics, the ACL set of deploy/acls.py is
applied to the run's prefix (and removed afterwards), and the raw consumer and the worker connect
as ``worker`` with the variables of that principal's env file: the worker runs on exactly the
rights it is deployed with. Both brokers run throughout, so each measurement has the same
neighbours. Prints the figures and writes ``security.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.results import RESULTS_DIR, Result, Series
from tests.benchmarks.throughput import (
    PLAINTEXT,
    Security,
    Signals,
    WorkerRun,
    make_signals,
    prepare_backlog,
    raw_consume_rate,
    thin,
    worker_rate,
)
from tests.support.broker import provide_broker
from tests.support.secure_broker import SecureBroker, acls_module, provide_secure_broker

#: The principals of the secured run: who sets the backlog up, who reads it.
SETUP_PRINCIPAL = "admin"
READER_PRINCIPAL = "worker"


@dataclass(slots=True)
class Measured:
    protocol: str
    prefix: str
    raw_signals_per_s: float
    worker: WorkerRun


def measure_backlog(
    protocol: str, bootstrap: str, prefix: str, topics: list[str], expected: int, as_: Security
) -> Measured:
    """The raw consumer, then the worker, on a backlog already in Kafka, connecting with ``as_``."""
    raw = asyncio.run(raw_consume_rate(bootstrap, topics, expected, security=as_))
    with tempfile.TemporaryDirectory() as tmp:
        run = worker_rate(bootstrap, prefix, expected, Path(tmp), security=as_)
    return Measured(protocol, prefix, raw, run)


def over_plaintext(bootstrap: str, signals: Signals) -> Measured:
    prefix, topics = asyncio.run(prepare_backlog(bootstrap, signals))
    return measure_backlog("PLAINTEXT", bootstrap, prefix, topics, len(signals), PLAINTEXT)


def over_sasl_ssl(broker: SecureBroker, signals: Signals) -> Measured:
    setup = broker.principal(SETUP_PRINCIPAL).env
    reader = broker.principal(READER_PRINCIPAL)
    protocol = reader.env["TRUST_KAFKA_SECURITY_PROTOCOL"]
    prefix, topics = asyncio.run(prepare_backlog(broker.address, signals, security=setup))
    with acl_set_in_force(broker, prefix):
        return measure_backlog(protocol, broker.address, prefix, topics, len(signals), reader.env)


@contextmanager
def acl_set_in_force(broker: SecureBroker, prefix: str) -> Iterator[None]:
    """The deployment's ACL set for ``prefix`` (and the app id worker_env gives the worker)."""
    acls = acls_module()
    options = broker.admin.client_options()
    bindings = acls.acl_set(acls.Deployment(prefix, f"{prefix}scorer"))
    asyncio.run(acls.apply(options, bindings))
    try:
        yield
    finally:
        asyncio.run(acls.remove(options, bindings))


#: What is measured both ways: (figure key part, label, bar label).
KINDS = (
    ("worker", "one worker, durable", "one worker"),
    ("raw_consume", "raw aiokafka consume only", "raw consume"),
)


def rate(measured: Measured, kind: str) -> float:
    return measured.worker.signals_per_s if kind == "worker" else measured.raw_signals_per_s


def record(result: Result, plain: Measured, secured: Measured, over: str) -> None:
    """The figures: each rate both ways, and what the secured one keeps of the plain one."""
    ratios: list[tuple[float | str, float]] = []
    for kind, label, bar in KINDS:
        for measured in (plain, secured):
            result.add(
                f"{_slug(measured.protocol)}_{kind}_signals_per_s",
                f"{label}, {measured.protocol} ({over})",
                round(rate(measured, kind)),
                "signals/s",
            )
        ratio = round(rate(secured, kind) / rate(plain, kind), 3)
        result.add(
            f"{kind}_{_slug(secured.protocol)}_vs_{_slug(plain.protocol)}",
            f"{label}: {secured.protocol} / {plain.protocol}",
            ratio,
            "ratio",
        )
        ratios.append((bar, ratio))
    # Ratios, not rates, side by side: the raw consumer is an order of magnitude faster than the
    # worker, and on one scale the worker's bars would not show their difference.
    result.series[f"{secured.protocol} rate / {plain.protocol} rate"] = Series(
        "measurement", "ratio", ratios, "bar"
    )
    for measured in (plain, secured):
        result.series[f"signals applied over time, {measured.protocol}"] = Series(
            "seconds since the first applied signal",
            "signals applied",
            thin(measured.worker.progress, 200),
        )


def _slug(protocol: str) -> str:
    return protocol.lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--signals", type=int, default=None, help="signals per run (500,000)")
    parser.add_argument("--agents", type=int, default=None, help="agents (10,000)")
    parser.add_argument("--quick", action="store_true", help="a small smoke-sized run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    agents = args.agents or (1_000 if args.quick else 10_000)
    # At least one signal per agent, so that every agent has state.
    count = max(args.signals or (50_000 if args.quick else 500_000), agents)
    signals = make_signals(agents, count)
    # Both brokers are had before anything is measured: a secured broker that cannot be started
    # fails the run at once, not after the plaintext half.
    with provide_broker() as bootstrap, provide_secure_broker() as broker:
        plain = over_plaintext(bootstrap, signals)
        secured = over_sasl_ssl(broker, signals)
        mechanism = broker.principal(READER_PRINCIPAL).env.get("TRUST_KAFKA_SASL_MECHANISM")
    result = Result(
        "security",
        "Throughput over SASL_SSL beside plaintext",
        parameters={
            "signals": count,
            "agents": agents,
            "partitions": 6,
            "window_seconds": 30,
            "protocols": [plain.protocol, secured.protocol],
            "sasl_mechanism": mechanism,
            "setup_principal": SETUP_PRINCIPAL,
            "reader_principal": READER_PRINCIPAL,
            "topic_prefixes": {m.protocol: m.prefix for m in (plain, secured)},
            "quick": args.quick,
        },
    )
    record(result, plain, secured, f"{count:,} signals over {agents:,} agents")
    result.notes += [
        "The same records (same seed) go to fresh topics (six partitions each) on each broker; "
        "the plaintext run is measured first, then the SASL_SSL one, never both at once. Each "
        "starts one worker on the backlog already in Kafka and times it from its first applied "
        "signal to its last, as the throughput scenario does; the raw consume rate is read on "
        "the same records just before.",
        f"On the secured broker the topics are created and filled by {SETUP_PRINCIPAL}, and the "
        f"raw consumer and the worker connect as {READER_PRINCIPAL} over TLS with "
        f"{mechanism}, with the ACL set of deploy/acls.py applied to the run's prefix (the "
        "broker's StandardAuthorizer checks every request). The worker's producer (changelog, "
        "scores) and its consumers all go over the secured listener.",
        "Both brokers are local (deploy/local/kafka) and run throughout, with the same settings "
        "apart from the listeners and the authorizer (and, by default, a smaller heap for the "
        "secured one: 512 MiB against 1 GiB). Brokers, worker and benchmark share the machine.",
    ]
    result.print()
    result.write(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
