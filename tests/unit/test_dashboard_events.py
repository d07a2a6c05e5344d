"""The dashboard's pieces that need no broker: the event stream's framing and fan-out (a slow
browser is dropped, never waited for), the page's files and their security headers, the census's
counts per tier, and the reinstatement an explanation shows."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from streams.kafka.clients import KafkaConnection
from streams.scoring.agent import AgentState
from streams.scoring.codec import encode_state
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from streams.scoring.records import Reinstatement, Revocation, WindowTrigger
from streams.web.dashboard import ASSETS, CONTENT_SECURITY_POLICY, load_assets
from streams.web.events import (
    KEEPALIVE,
    REVOCATION,
    SCORE,
    EventHub,
    Subscriber,
    frame,
    status_frame,
)
from streams.web.pages import explanation
from streams.web.scan import TIER_ORDER, AgentScan, Census
from tests.unit.test_api_scan import _store

CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS)


def _hub(**options: object) -> EventHub:
    hub = EventHub(KafkaConnection("127.0.0.1:1"), "s", "r", 2, **options)  # type: ignore[arg-type]
    # No reader: these tests feed the hub themselves.
    hub._reader = _NeverDone()  # type: ignore[assignment]
    return hub


class _NeverDone:
    def done(self) -> bool:
        return False


def test_a_value_is_one_event_whatever_line_breaks_it_holds() -> None:
    assert frame(SCORE, b'{"a":1}') == b'event: score\ndata: {"a":1}\n\n'
    framed = frame(REVOCATION, b'{\n"a":\r\n1}')
    assert framed.count(b"\n\n") == 1 and framed.endswith(b"\n\n")
    data = framed.split(b"data: ", 1)[1].strip()
    assert orjson.loads(data) == {"a": 1}
    assert orjson.loads(status_frame(False, "x").split(b"data: ")[1]) == {
        "live": False,
        "error": "x",
    }


async def test_every_browser_gets_each_batch_as_one_chunk_and_tombstones_are_skipped() -> None:
    hub = _hub()
    first, second = hub.subscribe(), hub.subscribe()
    assert first is not None and second is not None
    hub.publish([(SCORE, [b'{"n":1}', None, b'{"n":2}']), (REVOCATION, [b'{"r":1}'])])
    expected = frame(SCORE, b'{"n":1}') + frame(SCORE, b'{"n":2}') + frame(REVOCATION, b'{"r":1}')
    assert await first.next(0.1) == expected
    assert await second.next(0.1) == expected
    assert await first.next(0.01) == KEEPALIVE  # nothing more: a keep-alive comment


async def test_a_new_browser_first_gets_the_recent_revocations_and_whether_it_is_live() -> None:
    hub = _hub()
    hub.publish([(REVOCATION, [b'{"r":%d}' % i for i in range(60)])])
    hub.live = True
    late = hub.subscribe()
    assert late is not None
    greeting = await late.next(0.1)
    assert greeting is not None
    assert greeting.count(b"event: revocation") == 50  # the most recent ones only
    assert b'{"r":59}' in greeting and b'{"r":9}\n' not in greeting
    assert greeting.endswith(status_frame(True))


async def test_a_slow_browser_is_dropped_and_the_others_keep_receiving() -> None:
    hub = _hub(client_max_bytes=1000)
    slow, quick = hub.subscribe(), hub.subscribe()
    assert slow is not None and quick is not None
    for i in range(20):
        hub.publish([(SCORE, [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 100)])])
        assert await quick.next(0.1) is not None  # the quick one reads as it comes
    assert slow.dropped and slow not in hub.subscribers
    assert await slow.next(0.1) is None  # its stream ends; the page reconnects
    assert hub.dropped == 1 and quick in hub.subscribers


async def test_browsers_past_the_limit_are_refused_and_closing_ends_every_stream() -> None:
    hub = _hub(max_clients=2)
    browsers = [hub.subscribe(), hub.subscribe()]
    assert hub.subscribe() is None
    hub._reader = None
    await hub.close()
    for browser in browsers:
        assert browser is not None and await browser.next(0.1) is None
    assert hub.subscribe() is None  # the worker is stopping


async def test_a_subscriber_wakes_for_a_chunk_offered_while_it_waits() -> None:
    import asyncio

    subscriber = Subscriber()
    waiting = asyncio.ensure_future(subscriber.next(5))
    await asyncio.sleep(0)
    subscriber.offer(b"x")
    assert await asyncio.wait_for(waiting, 1) == b"x"


def test_the_page_is_in_the_package_and_runs_no_inline_script() -> None:
    assets = load_assets()
    assert set(assets) == set(ASSETS)
    html = assets["index.html"].body.decode()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert scripts and all(not body.strip() for body in scripts)
    assert not re.search(r"<[^>]+\son[a-z]+=", html), "no inline event handlers"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    for name, asset in assets.items():
        if name.endswith(".js"):
            text = asset.body.decode()
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
            assert "eval(" not in text and "new Function" not in text, name
    # Every script file the page imports is served.
    imported = set(
        re.findall(
            r'from "\./([a-z]+\.js)"',
            "".join(a.body.decode() for n, a in assets.items() if n.endswith(".js")),
        )
    )
    assert imported <= set(assets)


async def test_the_census_counts_agents_per_tier(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for i, score in enumerate((950, 720, 700, 500, 310, 120)):
        store.db(i % 2).put(f"did:m:{i}".encode(), encode_state(AgentState(score=score)))
    census = Census(AgentScan(store, lambda: frozenset({0, 1})), lambda: 500)
    counts = await census.counts(wait=5)
    assert counts is not None
    by_tier = dict(zip((t.value for t in TIER_ORDER), counts.by_tier, strict=True))
    assert by_tier == {
        "verified_partner": 1,
        "trusted": 2,
        "standard": 1,
        "probationary": 1,
        "untrusted": 1,
    }


def test_an_explanation_shows_the_lifted_revocation_until_the_agent_is_revoked_again() -> None:
    revocation = Revocation("rev-1", 1_000, 250, 300, "Trust score 250 below threshold",
                            (50.0,) * 5, WindowTrigger(0), 0)  # fmt: skip
    state = AgentState(score=250, revoked=False, revocation=revocation)
    state.reinstatement = Reinstatement("re-1", 2_000, "rev-1", "secops", "false positive", None, 7)
    shown = explanation("did:m:a", state, CONFIG)["reinstatement"]
    assert shown == {
        "reinstatement_id": "re-1",
        "reinstated_at": "1970-01-01T00:00:02.000Z",
        "requested_by": "secops",
        "reason": "false positive",
        "lifted_revocation_id": "rev-1",
        "lifted_reason": "Trust score 250 below threshold",
    }
    state.revoked = True
    again = explanation("did:m:a", state, CONFIG)
    assert again["reinstatement"] is None and again["revocation"]["revocation_id"] == "rev-1"
