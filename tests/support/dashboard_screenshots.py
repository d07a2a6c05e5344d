"""Screenshots of the dashboard for the README, from a real worker and a simulated fleet.

    .venv/bin/python -m tests.support.dashboard_screenshots [--seconds 60] [--out docs]

Starts a worker on fresh topics of the broker at ``KAFKA_BOOTSTRAP_SERVERS`` (default the local
one, 127.0.0.1:19092), publishes signals for a fleet of agents of every kind (excellent, good,
middling, degrading, malicious) for a while, opens the dashboard in Debian's chromium, and writes
``dashboard.png`` (the fleet) and ``dashboard-agent.png`` (a revoked agent) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

import orjson

from tests.support.kafka_io import producer, unique_name
from tests.support.worker import WorkerProcess, worker_env

DIMENSIONS = (
    "policy_compliance",
    "resource_efficiency",
    "output_quality",
    "security_posture",
    "collaboration_health",
)
SOURCES = {
    "policy_compliance": "policy-engine",
    "resource_efficiency": "metering",
    "output_quality": "qa-sampler",
    "security_posture": "ids-gateway",
    "collaboration_health": "peer-review",
}
KINDS = ("excellent", "good", "good", "middling", "degrading", "excellent", "good", "malicious")


def _value(rng: random.Random, kind: str, dimension: str, age: float) -> float:
    if kind == "excellent":
        return rng.choice((1.0, 1.0, 0.98, 0.95))
    if kind == "good":
        return rng.uniform(0.7, 1.0)
    if kind == "middling":
        return rng.uniform(0.35, 0.8)
    if kind == "degrading":
        return max(0.3, rng.uniform(0.6, 1.0) - age / 60)
    # Malicious: after a quiet start, probes security boundaries, ignores policy, fakes output.
    if age > 10 and dimension in ("security_posture", "policy_compliance", "output_quality"):
        return rng.choice((0.0, 0.0, 0.05, 0.1))
    return rng.uniform(0.5, 0.9)


async def _fleet(bootstrap: str, prefix: str, agents: int, seconds: float) -> None:
    rng = random.Random(11)
    started = time.monotonic()
    dids = [(f"did:mesh:agent-{i:03d}", KINDS[i % len(KINDS)]) for i in range(agents)]
    async with producer(bootstrap) as p:
        while (age := time.monotonic() - started) < seconds:
            for did, kind in dids:
                if rng.random() > 0.5:
                    continue
                dimension = rng.choice(DIMENSIONS)
                body = {
                    "agent_did": did,
                    "value": round(_value(rng, kind, dimension, age), 3),
                    "source": SOURCES[dimension],
                }
                topic = f"{prefix}signals.{dimension}"
                await p.send(topic, orjson.dumps(body), key=did.encode())
            await asyncio.sleep(0.5)


async def _shoot(base_url: str, out: Path, seconds: float) -> None:
    from playwright.async_api import async_playwright, expect

    # Opened late in the run: the fleet counts are taken at the first look (then once a minute).
    await asyncio.sleep(max(0.0, seconds - 15))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = await browser.new_page(viewport={"width": 1440, "height": 1000})
        await page.goto(f"{base_url}/ui/")
        await expect(page.locator("#stream-status")).to_have_attribute(
            "data-state", "live", timeout=30_000
        )
        at_risk = page.locator("#at-risk a.did").first
        await expect(at_risk).to_be_visible(timeout=30_000)
        await at_risk.click()  # the same page: live updates keep coming in
        await expect(page.locator("#history-chart circle.point").first).to_be_visible()
        await asyncio.sleep(8)
        await page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        revoked = page.locator("#revocations li a.did").first
        await expect(revoked).to_be_visible(timeout=30_000)
        await revoked.click()
        await expect(page.locator("#agent-status")).to_have_text("revoked")
        await asyncio.sleep(1)
        await page.locator("#agent-card").screenshot(path=str(out / "dashboard-agent.png"))
        await browser.close()


async def main(args: argparse.Namespace) -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    prefix = unique_name("shots") + "."
    folder = Path(tempfile.mkdtemp(prefix="trust-shots-"))
    env = worker_env(
        bootstrap, prefix, folder / "state", partitions=3, window_seconds="5", grace_seconds="1"
    )
    worker = WorkerProcess(env=env, log_path=folder / "worker.log").start()
    try:
        worker.wait_until_ready(timeout=120)
        await asyncio.gather(
            _fleet(bootstrap, prefix, args.agents, args.seconds),
            _shoot(worker.base_url, Path(args.out), args.seconds),
        )
    finally:
        worker.terminate()
    print(f"wrote {args.out}/dashboard.png and {args.out}/dashboard-agent.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--out", default="docs")
    asyncio.run(main(parser.parse_args()))
