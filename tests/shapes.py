"""Check response bodies against our own OpenAI shape schemas.

When ../shared/reference/openai-schemas.json (the team's copy of OpenAI's
official schemas) sits beside the project, bodies are checked against it
too; a user's clone has no such folder, and that extra check is skipped.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

OWN_SCHEMAS = Path(__file__).with_name("schemas") / "openai-responses.json"
OFFICIAL_SCHEMAS = (Path(__file__).resolve().parents[2] / "shared" / "reference"
                    / "openai-schemas.json")
OFFICIAL_NAMES = {
    "ChatCompletion": "CreateChatCompletionResponse",
    "ChatCompletionChunk": "CreateChatCompletionStreamResponse",
    "ModelList": "ListModelsResponse",
    "Error": "ErrorResponse",
    "ImagesResponse": "ImagesResponse",
}


@cache
def _own(kind: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(OWN_SCHEMAS.read_text())[kind])


@cache
def _official(kind: str) -> Draft202012Validator | None:
    if not OFFICIAL_SCHEMAS.exists():
        return None
    document = json.loads(OFFICIAL_SCHEMAS.read_text())
    document["$ref"] = f"#/components/schemas/{OFFICIAL_NAMES[kind]}"
    return Draft202012Validator(document)


def assert_shape(kind: str, body: object) -> None:
    """Fail with every schema violation when body is not a valid `kind`."""
    validators = [_own(kind)]
    official = _official(kind)
    if official is not None:
        validators.append(official)
    problems = [f"{error.json_path}: {error.message}"
                for validator in validators for error in validator.iter_errors(body)]
    assert not problems, f"{kind} does not validate:\n" + "\n".join(problems)


def official_schemas_present() -> bool:
    return OFFICIAL_SCHEMAS.exists()
