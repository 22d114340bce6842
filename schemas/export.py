"""Export each record's JSON Schema, for producers written in other languages."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import msgspec

from schemas.records import RECORD_TYPES, SCHEMA_VERSION

JSON_DIR = Path(__file__).with_name("json")


def json_schemas() -> dict[str, bytes]:
    """File name -> pretty JSON Schema bytes, one per record type."""
    out: dict[str, bytes] = {}
    for name, record_type in RECORD_TYPES.items():
        schema = msgspec.json.schema(record_type)
        _clean_descriptions(schema)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://foresight.dev/schemas/{name}.v{SCHEMA_VERSION}.json"
        schema["title"] = record_type.__name__
        out[f"{name}.v{SCHEMA_VERSION}.json"] = (
            msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"
        )
    return out


def _clean_descriptions(node: Any) -> None:
    """Every description (a record's docstring) as inspect.cleandoc gives it: Python 3.13
    strips a docstring's indentation when it compiles it, 3.11 does not, and the files written
    must be the same on each."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = inspect.cleandoc(value)
            else:
                _clean_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            _clean_descriptions(item)


def write_json_schemas(directory: Path = JSON_DIR) -> list[Path]:
    """Write the JSON Schema files; return the ones whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for file_name, content in json_schemas().items():
        path = directory / file_name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for path in write_json_schemas():
        print(f"wrote {path}")
