"""Reading and changing a topic's settings on the broker, as an operator (or a fault) would."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


async def topic_setting(bootstrap: str, topic: str, name: str) -> str:
    """The effective value of one setting of ``topic`` (its own, else the broker's default)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: None})]
        )
    finally:
        await admin.close()
    for response in responses:
        for resource in response.to_object()["resources"]:
            assert resource["error_code"] == 0, f"describing {topic}: {resource}"
            for entry in resource["config_entries"]:
                if entry["config_names"] == name and entry["config_value"] is not None:
                    return str(entry["config_value"])
    raise AssertionError(f"topic {topic} has no setting {name}")


async def set_topic_settings(bootstrap: str, topic: str, settings: dict[str, str]) -> None:
    """Replace the settings made on ``topic`` itself by ``settings`` (AlterConfigs semantics:
    settings not named fall back to the broker's defaults)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=settings)]
        )
    finally:
        await admin.close()
    for response in responses:
        for code, message, *_ in response.resources:
            assert code == 0, f"altering {topic} to {settings}: error {code} ({message})"


async def broker_message_limit(bootstrap: str, topic: str) -> int:
    """The largest record batch the broker accepts on ``topic`` (``max.message.bytes``)."""
    return int(await topic_setting(bootstrap, topic, "max.message.bytes"))


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        response = await admin.delete_topics(topics)
    finally:
        await admin.close()
    for topic, code, *_ in response.topic_error_codes:
        assert code == 0, f"deleting {topic}: error {code}"
