"""The API's decisions without a broker: where a read about one agent is answered, what a
forwarded request may do, and a fleet-wide page merged from this worker and the others."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from yarl import URL

from streams.processing.ownership import Ownership
from streams.scoring.agent import AgentState
from streams.scoring.codec import encode_state
from streams.sdk.signals import partition_for
from streams.settings import Settings
from streams.state.store import StateStore
from streams.web.api import Api
from streams.web.forwarding import FORWARDED, Answer, FanOut, WorkerUnavailable
from streams.web.pages import LocalPage, decode_cursor, summary

OWN = "http://w1:6066"
OTHER = "http://w2:6066"


class View:
    """Faust's view, as far as the API uses it: responses as plain tuples."""

    def json(self, body: Any, status: int = 200, headers: Any = None) -> tuple[int, Any]:
        return status, body

    def bytes(self, body: bytes, content_type: str, status: int = 200) -> tuple[int, Any]:
        return status, orjson.loads(body)


@dataclass
class Request:
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def rel_url(self) -> URL:
        return URL(self.path)


class Config:
    def __init__(self) -> None:
        self.current = Settings().scoring_config


class Forwarder:
    """Answers for the other worker as a test says."""

    def __init__(self, owner: str | None, answer: Answer | Exception, pages: FanOut) -> None:
        self.own_url = OWN
        self.owner = owner
        self.answer = answer
        self.pages = pages
        self.asked: list[tuple[str, str, dict[str, str]]] = []

    def owner_of(self, did: str) -> str | None:
        return self.owner

    async def get(self, url: str, path: str, params: Any, authorization: Any) -> Answer:
        self.asked.append((url, path, dict(params)))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def fan_out(self, path: str, params: Any, authorization: Any) -> FanOut:
        self.asked.append(("*", path, dict(params)))
        return self.pages


def _api(tmp_path: Path, owned: set[int], forwarder: Forwarder) -> tuple[Api, StateStore]:
    settings = Settings(partitions=2, api_read_token=SecretStr("r"))
    store = StateStore(state_dir=tmp_path, changelog_topic="c", producer=lambda: None)
    ownership = Ownership()
    ownership.assign(owned)
    ownership.take_over(owned)
    api = Api(None, settings, store, Config(), ownership, table_name="t", own_url=OWN)  # type: ignore[arg-type]
    api.forwarder = forwarder  # type: ignore[assignment]
    return api, store


def _did(partition: int, skip: int = 0) -> str:
    """A DID on ``partition`` (the ``skip``-th after the first)."""
    found = (f"did:m:{i}" for i in range(10_000) if partition_for(f"did:m:{i}", 2) == partition)
    for _ in range(skip):
        next(found)
    return next(found)


async def test_an_agent_of_this_worker_is_answered_here(tmp_path: Path) -> None:
    forwarder = Forwarder(OTHER, Answer(500, b"{}", "application/json"), FanOut())
    api, store = _api(tmp_path, {0}, forwarder)
    did = _did(0)
    store.db(0).put(did.encode(), encode_state(AgentState(score=420)))
    status, body = await api.agent(View(), Request(f"/agents/{did}/score"), did, summary)  # type: ignore[arg-type]
    assert status == 200 and body["total_score"] == 420 and not forwarder.asked
    unknown = _did(0, skip=1)
    status, body = await api.agent(View(), Request("/x"), unknown, summary)  # type: ignore[arg-type]
    assert status == 404 and unknown in body["error"]
    assert (await api.agent(View(), Request("/x"), "not-a-did", summary))[0] == 422  # type: ignore[arg-type]


async def test_an_agent_of_another_worker_is_forwarded_there(tmp_path: Path) -> None:
    forwarder = Forwarder(OTHER, Answer(200, b'{"total_score": 7}', "application/json"), FanOut())
    api, _ = _api(tmp_path, {0}, forwarder)
    did = _did(1)
    status, body = await api.agent(View(), Request(f"/agents/{did}/score"), did, summary)  # type: ignore[arg-type]
    assert (status, body) == (200, {"total_score": 7})
    assert forwarder.asked == [(OTHER, f"/agents/{did}/score", {})]


@pytest.mark.parametrize(
    ("owner", "headers", "answer", "status"),
    [
        (OTHER, {FORWARDED: "1"}, None, 503),  # forwarded here, not ours: never forwarded again
        (None, {}, None, 503),  # no assignment known yet
        (OWN, {}, None, 503),  # ours, still being restored
        (OTHER, {}, WorkerUnavailable(OTHER, "no answer within 5 s"), 504),
        (OTHER, {}, WorkerUnavailable(OTHER, "cannot be reached (OSError)"), 502),
    ],
)
async def test_what_cannot_be_forwarded_says_why(
    tmp_path: Path, owner: str | None, headers: dict[str, str], answer: Any, status: int
) -> None:
    forwarder = Forwarder(owner, answer or Answer(200, b"{}", "application/json"), FanOut())
    api, _ = _api(tmp_path, {0}, forwarder)
    did = _did(1)
    got, body = await api.agent(
        View(), Request(f"/agents/{did}/score", headers=headers), did, summary
    )  # type: ignore[arg-type]
    assert got == status and "error" in body
    if status in (502, 504):
        assert OTHER in body["error"]


async def test_a_fleet_page_merges_this_worker_and_the_others_and_names_the_missing(
    tmp_path: Path,
) -> None:
    other = LocalPage([("did:m:b", {"agent_did": "did:m:b"})], None, [1]).to_json()
    pages = FanOut(answers={OTHER: other}, missing=["http://w3:6066"])
    forwarder = Forwarder(OTHER, Answer(200, b"{}", "application/json"), pages)
    api, store = _api(tmp_path, {0}, forwarder)
    for did, score in (("did:m:a", 100), ("did:m:c", 200), ("did:m:d", 900)):
        store.db(0).put(did.encode(), encode_state(AgentState(score=score)))
    request = Request("/agents/at-risk", query={"limit": "2"})
    ready, body = await api.fleet(View(), request, api.at_risk_page, {})  # type: ignore[arg-type]
    assert ready is None
    assert [a["agent_did"] for a in body["agents"]] == ["did:m:a", "did:m:b"]
    assert body["partial"] is True and body["missing_workers"] == ["http://w3:6066"]
    assert decode_cursor(body["next_cursor"]) == "did:m:b"
    assert forwarder.asked == [("*", "/agents/at-risk", {"limit": "2"})]
    # Asked by another worker: this worker's own page, as it travels.
    forwarded = Request("/agents/at-risk", query={"limit": "5"}, headers={FORWARDED: "1"})
    (status, own), _ = await api.fleet(View(), forwarded, api.at_risk_page, {})  # type: ignore[arg-type,misc]
    assert status == 200 and LocalPage.from_json(own).partitions == [0]
    bad = Request("/agents/at-risk", query={"limit": "0"})
    (status, _), _ = await api.fleet(View(), bad, api.at_risk_page, {})  # type: ignore[arg-type,misc]
    assert status == 422
