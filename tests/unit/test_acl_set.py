"""The ACL set of deploy/acls.py, read as rules: who may write and read each topic.

The integration tests (tests/integration/test_secure_broker.py) show the broker enforcing the
set; these check the set itself against the threat model in docs/security.md, for every topic.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.kafka.topics import TopicNames
from tests.support.secure_broker import acls_module

PREFIX = "agentmesh."
APP_ID = "trust-scorer"
NAMES = TopicNames(PREFIX)


@pytest.fixture(scope="module")
def acls() -> Any:
    return acls_module()


@pytest.fixture(scope="module")
def bindings(acls: Any) -> list[Any]:
    return acls.acl_set(acls.Deployment(PREFIX, APP_ID))


def who(bindings: list[Any], acls: Any, operation: str, topic: str) -> set[str]:
    """The principals allowed ``operation`` on ``topic`` (literal or by a prefix)."""
    op = acls.Operation[operation]
    return {
        b.principal.removeprefix("User:")
        for b in bindings
        if b.resource_type is acls.ResourceType.TOPIC
        and b.operation is op
        and (b.name == topic if b.pattern is acls.PatternType.LITERAL else topic.startswith(b.name))
    }


def test_each_signal_topic_is_written_by_its_own_producer_alone(
    acls: Any, bindings: list[Any]
) -> None:
    for dimension_topic in NAMES.signals:
        dimension = dimension_topic.removeprefix(f"{PREFIX}signals.")
        assert who(bindings, acls, "WRITE", dimension_topic) == {f"producer-{dimension}"}
        assert who(bindings, acls, "READ", dimension_topic) == {"worker"}


def test_outputs_are_written_by_the_worker_and_read_by_their_audiences(
    acls: Any, bindings: list[Any]
) -> None:
    for topic in (NAMES.scores, NAMES.revocations, NAMES.deadletter):
        assert who(bindings, acls, "WRITE", topic) == {"worker"}
    # The worker too: its dashboard streams the fleet's updates.
    assert who(bindings, acls, "READ", NAMES.scores) == {"operator", "scores-reader", "worker"}
    assert who(bindings, acls, "READ", NAMES.revocations) == {"operator", "security-team", "worker"}
    assert who(bindings, acls, "READ", NAMES.deadletter) == {"operator"}


def test_internal_topics_are_written_by_the_worker_and_the_operator_only(
    acls: Any, bindings: list[Any]
) -> None:
    assert who(bindings, acls, "WRITE", NAMES.ticks) == {"worker"}
    assert who(bindings, acls, "WRITE", NAMES.agent_state) == {"worker"}
    assert who(bindings, acls, "WRITE", NAMES.commands) == {"worker", "operator"}
    assert who(bindings, acls, "WRITE", NAMES.config) == {"worker", "operator"}
    faust_topics = (f"{APP_ID}-__assignor-__leader", f"{APP_ID}-agent-state-changelog")
    for topic in faust_topics:
        assert who(bindings, acls, "WRITE", topic) == {"worker"}
        assert who(bindings, acls, "READ", topic) == {"worker"}


def test_only_the_worker_creates_topics_and_nothing_is_cluster_wide(
    acls: Any, bindings: list[Any]
) -> None:
    creators = {b.principal for b in bindings if b.operation is acls.Operation.CREATE}
    assert creators == {"User:worker"}
    assert not [b for b in bindings if b.resource_type is acls.ResourceType.CLUSTER]
    assert not [b for b in bindings if b.resource_type is acls.ResourceType.TRANSACTIONAL_ID]


def test_prefixed_patterns_cover_only_fausts_topics_and_the_readers_groups(
    acls: Any, bindings: list[Any]
) -> None:
    prefixed = {
        (b.principal, b.resource_type, b.name)
        for b in bindings
        if b.pattern is acls.PatternType.PREFIXED
    }
    assert prefixed == {
        ("User:worker", acls.ResourceType.TOPIC, f"{APP_ID}-"),
        ("User:security-team", acls.ResourceType.GROUP, f"{PREFIX}security-team"),
        ("User:scores-reader", acls.ResourceType.GROUP, f"{PREFIX}scores-reader"),
    }
    every_literal_topic = {
        b.name
        for b in bindings
        if b.resource_type is acls.ResourceType.TOPIC and b.pattern is acls.PatternType.LITERAL
    }
    assert every_literal_topic == set(NAMES.all)


def test_a_role_can_be_given_another_clusters_principal(acls: Any) -> None:
    deployment = acls.Deployment(
        PREFIX, APP_ID, acls._principal_overrides(["worker=svc-trust", "operator=User:ops"])
    )
    principals = {b.principal for b in acls.acl_set(deployment)}
    assert {"User:svc-trust", "User:ops"} <= principals
    assert not {"User:worker", "User:operator"} & principals
    with pytest.raises(ValueError, match="ROLE=NAME"):
        acls._principal_overrides(["admin=root"])


def test_the_set_is_per_prefix(acls: Any) -> None:
    one = acls.acl_set(acls.Deployment("a.", "a.scorer"))
    other = acls.acl_set(acls.Deployment("b.", "b.scorer"))
    assert len(one) == len(other)
    assert not set(one) & set(other)
