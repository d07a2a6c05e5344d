"""``trust-streams config get|set``: read or change the scoring configuration in force."""

from __future__ import annotations

import argparse
import getpass
import json

from streams.console import UserError, load_settings, quiet_client_logs, require_topics, run_async
from streams.kafka.topics import TopicNames
from streams.processing.config_topic import describe, publish_config, read_config
from streams.scoring.model import DIMENSIONS, DimensionFloor, InvalidScoringConfig, ScoringConfig


def _parse_weights(text: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(DIMENSIONS):
        raise UserError(
            f"--weights takes {len(DIMENSIONS)} comma-separated numbers, in the order "
            f"{', '.join(d.value for d in DIMENSIONS)}; got {len(parts)}"
        )
    try:
        return [float(p) for p in parts]
    except ValueError as exc:
        raise UserError(f"--weights: {exc}") from exc


def _parse_floor(spec: str) -> tuple[int, DimensionFloor | None]:
    """DIMENSION=FLOOR[:MIN_SIGNALS], or DIMENSION=none to remove that dimension's floor."""
    name, _, rest = spec.partition("=")
    names = [d.value for d in DIMENSIONS]
    if name not in names or not rest:
        raise UserError(
            f"--floor {spec!r}: expected DIMENSION=FLOOR[:MIN_SIGNALS] with DIMENSION one of "
            f"{', '.join(names)}"
        )
    if rest == "none":
        return names.index(name), None
    floor_text, _, minimum_text = rest.partition(":")
    try:
        floor = DimensionFloor(float(floor_text), int(minimum_text) if minimum_text else 1)
    except ValueError as exc:
        raise UserError(f"--floor {spec!r}: {exc}") from exc
    return names.index(name), floor


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    quiet_client_logs(settings)
    topic = TopicNames(settings.topic_prefix).config

    async def current() -> ScoringConfig:
        await require_topics(settings, [topic])
        return await read_config(settings, topic, settings.scoring_config)

    if args.action == "get":
        print(json.dumps(describe(run_async(settings, current())), indent=2))
        return 0

    in_force = run_async(settings, current())
    weights = _parse_weights(args.weights) if args.weights else list(in_force.weights)
    revocation = (
        args.revocation_threshold
        if args.revocation_threshold is not None
        else in_force.revocation_threshold
    )
    warning = (
        args.warning_threshold if args.warning_threshold is not None else in_force.warning_threshold
    )
    floors = list(in_force.floors)
    if args.clear_floors:
        floors = [None] * len(DIMENSIONS)
    for spec in args.floor or []:
        index, floor = _parse_floor(spec)
        floors[index] = floor
    try:
        proposed = ScoringConfig.validated(weights, revocation, warning, floors=floors)
    except InvalidScoringConfig as exc:
        raise UserError(f"configuration rejected, nothing changed: {exc}") from exc
    published = run_async(
        settings,
        publish_config(settings, topic, proposed, getpass.getuser()),
    )
    print(json.dumps(describe(published), indent=2))
    return 0
