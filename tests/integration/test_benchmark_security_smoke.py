"""The security benchmark runs end to end on a quick run, through the suite's runner.

It judges correctness, not speed: both halves measured something, the ratios are those of the
figures, each backlog went to its own broker in full (read back here from the brokers, not from
the benchmark's bookkeeping), the ACL set applied for the secured run is gone afterwards, and the
report has the scenario's section.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.topics import TopicNames
from tests.support.broker import REPO_ROOT
from tests.support.secure_broker import SecureBroker, acls_module

QUICK_SIGNALS = 50_000
PARTITIONS = 6  # the throughput scenario's topics


async def signals_held(options: dict[str, Any], prefix: str) -> int:
    """Records on the signal topics of ``prefix``: the sum of their partitions' end offsets."""
    consumer = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in TopicNames(prefix).signals
            for p in range(PARTITIONS)
        ]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def test_security_benchmark_measures_both_protocols(
    kafka_bootstrap: str, secure_broker: SecureBroker, tmp_path: Path
) -> None:
    out_dir = tmp_path / "benchmarks"
    command = [sys.executable, "-m", "tests.benchmarks", "security", "--quick"]
    run = await asyncio.to_thread(
        subprocess.run,
        [*command, "--out-dir", str(out_dir)],
        cwd=REPO_ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads((out_dir / "security.json").read_text())
    figures = {f["key"]: f["value"] for f in result["figures"]}
    for kind in ("worker", "raw_consume"):
        plain = figures[f"plaintext_{kind}_signals_per_s"]
        secured = figures[f"sasl_ssl_{kind}_signals_per_s"]
        assert plain > 0 and secured > 0, figures
        assert figures[f"{kind}_sasl_ssl_vs_plaintext"] == pytest.approx(secured / plain, abs=0.002)

    parameters = result["parameters"]
    assert parameters["quick"] is True and parameters["signals"] == QUICK_SIGNALS
    assert parameters["protocols"] == ["PLAINTEXT", "SASL_SSL"]
    for protocol in ("PLAINTEXT", "SASL_SSL"):
        progress = result["series"][f"signals applied over time, {protocol}"]["points"]
        applied = [y for _, y in progress]
        assert applied == sorted(applied) and applied[-1] == QUICK_SIGNALS

    # Each backlog is on its own broker, whole; the secured one was written by admin.
    prefixes = parameters["topic_prefixes"]
    plain_options = {"bootstrap_servers": kafka_bootstrap}
    assert await signals_held(plain_options, prefixes["PLAINTEXT"]) == QUICK_SIGNALS
    admin_options = secure_broker.admin.client_options()
    assert await signals_held(admin_options, prefixes["SASL_SSL"]) == QUICK_SIGNALS

    # The ACL set applied for the secured run was removed with it.
    acls = acls_module()
    prefix = prefixes["SASL_SSL"]
    applied_set = set(acls.acl_set(acls.Deployment(prefix, f"{prefix}scorer")))
    async with acls.AclAdmin(admin_options) as admin:
        assert not applied_set & await admin.describe()

    page = (tmp_path / "benchmarks.md").read_text()
    section = page.split("## Security", 1)[1].split("\n## ", 1)[0]
    assert "**Quick run:**" in section
    assert "one worker, durable, SASL_SSL" in section
    plot = out_dir / "security-sasl-ssl-rate-plaintext-rate.png"
    assert plot.is_file() and f"(benchmarks/{plot.name})" in section
