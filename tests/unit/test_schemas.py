"""The JSON Schemas in schemas/ are the models' own, and the examples are valid messages."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from streams.messages import json_schema, message_models

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("stem", sorted(message_models()))
def test_schema_file_matches_its_model(stem: str) -> None:
    path = SCHEMAS / f"{stem}.schema.json"
    assert path.exists(), f"{path.name} is missing: run 'python -m streams schemas'"
    on_disk = json.loads(path.read_text())
    assert on_disk == json_schema(message_models()[stem]), (
        f"{path.name} has drifted from its pydantic model: run 'python -m streams schemas' and "
        "review the difference"
    )


def test_every_schema_file_belongs_to_a_model() -> None:
    files = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert files == set(message_models())


@pytest.mark.parametrize("example", sorted((SCHEMAS / "examples").glob("*.json")), ids=str)
def test_examples_validate_against_schema_and_model(example: Path) -> None:
    stem = example.name.split(".")[0]
    document = json.loads(example.read_text())
    schema = json.loads((SCHEMAS / f"{stem}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    message_models()[stem].model_validate_json(example.read_text())
