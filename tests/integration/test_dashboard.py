"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real worker
on the real broker: refusal and use of the read token, live score updates and revocations without
reload, an agent's history chart drawn from its explanation, reinstatement with and without the
admin token, and text from the wire shown as text.

One worker (with a read token and an admin token) and one browser serve the whole module; each
test has a browser context of its own (its own session storage) and its own agents.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tests.support.events import EventStream
from tests.support.kafka_io import consume, produce, unique_name
from tests.support.signals import DIMENSIONS, Fleet
from tests.support.worker import WorkerProcess, worker_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
READ_TOKEN = "dashboard-read-token"
ADMIN_TOKEN = "dashboard-admin-token"
#: Long enough for a window (2 s) and its grace (1 s) to close, with the event stream's way.
UPDATE_TIMEOUT_MS = 20_000
TIERS = ("verified_partner", "trusted", "standard", "probationary", "untrusted")


def _chromium() -> str | None:
    """Debian's chromium (never a downloaded browser)."""
    for candidate in (CHROMIUM, shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def prefix() -> str:
    return unique_name("dash") + "."


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    folder = tmp_path_factory.mktemp("dashboard")
    env = worker_env(
        kafka_bootstrap,
        prefix,
        folder / "state",
        partitions=2,
        window_seconds="2",
        grace_seconds="1",
        api_read_token=READ_TOKEN,
        admin_token=ADMIN_TOKEN,
    )
    process = WorkerProcess(env=env, log_path=folder / "worker.log").start()
    try:
        process.wait_until_ready(timeout=120)
        yield process
        # Stopping with a browser's stream open must not wait for the stream.
        with EventStream(process.base_url, READ_TOKEN):
            started = time.monotonic()
            assert process.terminate(timeout=30) == 0, process.log_since_start()[-3000:]
            assert time.monotonic() - started < 15, "an open event stream held up the stop"
        assert "Traceback" not in process.log, process.log[-4000:]
    finally:
        process.ensure_stopped()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:  # the dev extras install it
        pytest.fail(f"playwright is not installed: {exc}", pytrace=False)
    executable = _chromium()
    if executable is None:
        message = f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


class Page:
    """A page of the dashboard in a context of its own, with the errors it logged."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}")
                if message.type == "error" and "status of 40" not in message.text
                else None
            ),
        )

    async def open(self, fragment: str = "") -> Any:
        return await self.page.goto(f"{self.base_url}/ui/{fragment}")

    async def live(self) -> None:
        from playwright.async_api import expect

        await expect(self.page.locator("#stream-status")).to_have_attribute(
            "data-state", "live", timeout=UPDATE_TIMEOUT_MS
        )


async def _page(browser: Any, worker: WorkerProcess, *, read: str = "", admin: str = "") -> Page:
    context = await browser.new_context()
    if read or admin:
        # As if typed into the token form earlier in this tab.
        await context.add_init_script(
            f"sessionStorage.setItem('trust-streams.read-token', {json.dumps(read)});"
            f"sessionStorage.setItem('trust-streams.admin-token', {json.dumps(admin)});"
        )
    return Page(await context.new_page(), worker.base_url)


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any, worker: WorkerProcess) -> AsyncIterator[Page]:
    opened = await _page(browser, worker, read=READ_TOKEN)
    yield opened
    await opened.page.context.close()
    assert not opened.errors, opened.errors


def _get_json(worker: WorkerProcess, path: str) -> Any:
    request = urllib.request.Request(
        f"{worker.base_url}{path}", headers={"Authorization": f"Bearer {READ_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def test_without_the_read_token_the_page_shows_the_refusal_and_with_it_works(
    browser: Any, worker: WorkerProcess, kafka_bootstrap: str, prefix: str
) -> None:
    from playwright.async_api import expect

    # Agents in three tiers, scored before the page's first fleet count.
    fleet = Fleet(prefix)
    tiers = {"did:mesh:dash-high": 1.0, "did:mesh:dash-mid": 0.6, "did:mesh:dash-low": 0.35}
    records = []
    for did, value in tiers.items():
        records += [fleet.record(did, d, value, source="qa") for d in DIMENSIONS]
    await produce(kafka_bootstrap, records)
    for did in tiers:
        await _scored(worker, did)

    tab = await _page(browser, worker)
    page = tab.page
    response = await tab.open()
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    await expect(page.locator("#auth-message")).to_contain_text(
        "reading needs 'Authorization: Bearer <TRUST_API_READ_TOKEN>'"
    )
    await expect(page.locator("#stream-status")).to_have_attribute("data-state", "refused")
    assert await page.locator("#total-agents").text_content() == "\u2013"  # no count

    await page.fill("#read-token", READ_TOKEN)
    await page.click("#token-form button[type=submit]")
    await tab.live()
    await expect(page.locator("#auth")).to_be_hidden()
    await expect(page.locator("#total-agents")).to_have_text(_number())
    # Every tier has its row, with the count the worker gave.
    report = await asyncio.to_thread(_get_json, worker, "/health-report?limit=1")
    assert report["total_agents"] >= 3, report
    await expect(page.locator("#total-agents")).to_have_text(str(report["total_agents"]))
    await expect(page.locator("#tier-chart g.tier-row")).to_have_count(5)
    for tier in TIERS:
        row = page.locator(f'#tier-chart g[data-tier="{tier}"]')
        await expect(row).to_have_attribute("data-count", str(report[f"{tier}_agents"]))
    assert sum(report[f"{t}_agents"] for t in TIERS) == report["total_agents"]
    await page.context.close()
    # No error but the refused requests' (left out of tab.errors): no script or policy error.
    assert not tab.errors, tab.errors


def _number() -> re.Pattern[str]:
    return re.compile(r"^\d+$")


async def test_score_updates_and_revocations_appear_live_with_their_reasons(
    page: Page, worker: WorkerProcess, kafka_bootstrap: str, prefix: str
) -> None:
    from playwright.async_api import expect

    await page.open()
    await page.live()
    await page.page.evaluate("window.sameDocument = 'yes'")
    fleet = Fleet(prefix)
    steady, falling = "did:mesh:dash-steady", "did:mesh:dash-falling"
    records = [fleet.record(steady, "output_quality", 0.95, source="qa")] * 2
    records += [fleet.record(falling, d, 0.0, source="ids") for d in ("security_posture",) * 2]
    records += [fleet.record(falling, "policy_compliance", 0.0, source="policy")]
    await produce(kafka_bootstrap, records)

    updated = page.page.locator(f'#updates tr[data-did="{steady}"]')
    await expect(updated.first).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    scores = await consume(
        kafka_bootstrap,
        [f"{prefix}trust.scores"],
        until=lambda r: any(x.json()["agent_did"] == steady for x in r),
        timeout=20,
        what="the steady agent's update",
    )
    published = next(x.json() for x in scores if x.json()["agent_did"] == steady)
    await expect(updated.first).to_have_attribute("data-score", str(published["total_score"]))

    revoked = await consume(
        kafka_bootstrap,
        [f"{prefix}trust.revocations"],
        until=lambda r: any(x.json()["agent_did"] == falling for x in r),
        timeout=20,
        what="the falling agent's revocation",
    )
    reason = next(x.json()["reason"] for x in revoked if x.json()["agent_did"] == falling)
    assert "below threshold" in reason
    shown = page.page.locator(f'#revocations li[data-did="{falling}"]')
    await expect(shown.locator(".reason")).to_have_text(reason, timeout=UPDATE_TIMEOUT_MS)
    # Without a reload: the same document received them.
    assert await page.page.evaluate("window.sameDocument") == "yes"


async def test_an_agents_history_chart_is_drawn_from_its_explanation(
    page: Page, worker: WorkerProcess, kafka_bootstrap: str, prefix: str
) -> None:
    from playwright.async_api import expect

    fleet = Fleet(prefix)
    did = "did:mesh:dash-history"
    hostile = '<img src=x onerror="window.pwned=1">'
    await produce(kafka_bootstrap, [fleet.record(did, "output_quality", 0.9, source="qa")] * 3)
    # A critical signal recalculates at once: a second point besides the window's.
    await produce(kafka_bootstrap, [fleet.record(did, "resource_efficiency", 0.1, source=hostile)])

    deadline = time.monotonic() + 30
    while True:
        why = await asyncio.to_thread(_get_json_or_none, worker, f"/agents/{did}/explanation")
        if why is not None and len(why["history"]) >= 2:
            break
        assert time.monotonic() < deadline, f"no history of two points for {did}: {why}"
        await asyncio.sleep(0.3)

    await page.open(f"#agent={did}")
    chart = page.page.locator("#history-chart svg")
    await expect(chart).to_be_visible(timeout=10_000)
    # The page may have read a later explanation than this one (a window closed meanwhile):
    # compare with what the API says once the two agree on the number of points.
    deadline = time.monotonic() + 20
    while True:
        drawn = await chart.locator("circle.point").evaluate_all(
            "points => points.map(p => [p.dataset.at, Number(p.dataset.score)])"
        )
        why = await asyncio.to_thread(_get_json, worker, f"/agents/{did}/explanation")
        expected = [[h["at"], h["score"]] for h in why["history"]]
        if drawn == expected:
            break
        assert time.monotonic() < deadline, f"chart {drawn} != history {expected}"
        await page.page.click("#search button[type=submit]")
        await asyncio.sleep(0.5)
    assert len(drawn) >= 2
    assert await chart.locator("polyline.history-line").count() == 1
    await expect(chart.locator('line[data-threshold="revocation"]')).to_have_count(1)
    dimensions = page.page.locator("#dimension-chart g.dimension-row")
    await expect(dimensions).to_have_count(5)
    quality = page.page.locator('#dimension-chart g[data-dimension="output_quality"]')
    await expect(quality).to_have_attribute(
        "data-points", _js_number(why["dimensions"]["output_quality"]["contribution"])
    )
    # A source from the wire is shown as text, never as markup.
    source = page.page.locator("#signals td.source", has_text="onerror")
    await expect(source).to_have_text(hostile)
    assert await page.page.locator("#signals img").count() == 0
    assert await page.page.evaluate("window.pwned") is None


def _js_number(value: float) -> str:
    """How JavaScript writes a number as text (an integral float has no '.0')."""
    return str(int(value)) if float(value).is_integer() else repr(value)


async def _scored(worker: WorkerProcess, did: str, *, revoked: bool = False) -> dict[str, Any]:
    """The agent's explanation once a recalculation scored it (and revoked it, if asked)."""
    deadline = time.monotonic() + 30
    while True:
        why = await asyncio.to_thread(_get_json_or_none, worker, f"/agents/{did}/explanation")
        if why is not None and why["history"] and (why["revoked"] or not revoked):
            return dict(why)
        assert time.monotonic() < deadline, f"{did} was never scored (revoked: {revoked}): {why}"
        await asyncio.sleep(0.3)


def _get_json_or_none(worker: WorkerProcess, path: str) -> Any:
    try:
        return _get_json(worker, path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


async def test_reinstating_needs_the_admin_token_and_then_shows_the_agent_reinstated(
    browser: Any, worker: WorkerProcess, kafka_bootstrap: str, prefix: str
) -> None:
    from playwright.async_api import expect

    fleet = Fleet(prefix)
    did = "did:mesh:dash-reinstated"
    bad = [("security_posture", 0.0), ("policy_compliance", 0.0)]
    await produce(kafka_bootstrap, [fleet.record(did, d, v, source="ids") for d, v in bad])
    why = await _scored(worker, did, revoked=True)

    tab = await _page(browser, worker, read=READ_TOKEN)
    page = tab.page
    await tab.open(f"#agent={did}")
    await expect(page.locator("#agent-status")).to_have_text("revoked")
    await expect(page.locator("#agent-revocation .reason")).to_have_text(
        why["revocation"]["reason"]
    )

    await page.fill("#reinstate-reason", "false positive: IDS rule")
    await page.click("#reinstate-form button[type=submit]")
    await expect(page.locator("#reinstate-message")).to_contain_text(
        "Refused (401): this change needs 'Authorization: Bearer <TRUST_ADMIN_TOKEN>'"
    )
    await page.click("#tokens-toggle")
    await page.fill("#read-token", READ_TOKEN)
    await page.fill("#admin-token", "not-the-admin-token")
    await page.click("#token-form button[type=submit]")
    await page.fill("#reinstate-reason", "false positive: IDS rule")
    await page.click("#reinstate-form button[type=submit]")
    await expect(page.locator("#reinstate-message")).to_contain_text(
        "Refused (403): the bearer token is not valid"
    )
    await expect(page.locator("#agent-status")).to_have_text("revoked")

    await page.click("#tokens-toggle")
    await page.fill("#read-token", READ_TOKEN)
    await page.fill("#admin-token", ADMIN_TOKEN)
    await page.click("#token-form button[type=submit]")
    await tab.live()
    await page.fill("#reinstate-reason", "false positive: IDS rule")
    await page.click("#reinstate-form button[type=submit]")
    await expect(page.locator("#agent-status")).to_have_text(
        "reinstated", timeout=UPDATE_TIMEOUT_MS
    )
    await expect(page.locator("#agent-reinstatement .reason")).to_contain_text(
        "false positive: IDS rule"
    )
    await expect(page.locator("#reinstate-form")).to_be_hidden()
    # The audit record came through the stream: the revocation is marked lifted.
    listed = page.locator(f'#revocations li[data-did="{did}"] .badge')
    await expect(listed).to_have_text("reinstated", timeout=UPDATE_TIMEOUT_MS)
    await page.context.close()
    assert not tab.errors, tab.errors
