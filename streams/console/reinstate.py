"""``trust-streams reinstate``: lift an agent's revocation, and show the audit record it made."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
import uuid

import orjson
from aiokafka import TopicPartition
from pydantic import ValidationError

from streams.console import UserError, load_settings, quiet_client_logs, require_topics, run_async
from streams.kafka import clients
from streams.kafka.clients import KafkaConnection
from streams.kafka.topics import TopicNames
from streams.messages import ReinstateCommand


async def _reinstate(
    kafka: KafkaConnection,
    names: TopicNames,
    partitions: int,
    command: ReinstateCommand,
    timeout: float,
) -> dict[str, object] | None:
    consumer = clients.consumer(kafka, purpose="cli-reinstate")
    await consumer.start()
    try:
        # Position on the audit topic's end first, so the answer cannot slip past.
        tps = [TopicPartition(names.revocations, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)
        async with clients.producer(kafka, purpose="cli-reinstate") as producer:
            await producer.send_and_wait(
                names.commands,
                command.model_dump_json().encode(),
                key=command.agent_did.encode(),
            )
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                for record in records:
                    body = orjson.loads(record.value or b"{}")
                    if body.get("request_id") == command.request_id:
                        return dict(body)
        return None
    finally:
        await consumer.stop()


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    quiet_client_logs(settings)
    names = TopicNames(settings.topic_prefix)
    try:
        request = ReinstateCommand(
            agent_did=args.agent,
            requested_by=args.by or getpass.getuser(),
            reason=args.reason,
            request_id=str(uuid.uuid4()),
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise UserError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc

    async def work() -> dict[str, object] | None:
        counts = await require_topics(settings, [names.commands, names.revocations])
        return await _reinstate(
            KafkaConnection.from_settings(settings),
            names,
            counts[names.revocations],
            request,
            args.timeout,
        )

    audit = run_async(settings, work())
    if audit is None:
        print(
            f"trust-streams: no reinstatement of {args.agent} within {args.timeout:g} s: the agent "
            "is unknown or not revoked (see the worker's log), or no worker is running",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(audit, indent=2))
    return 0
