"""A small JSON Schema checker for the keywords the bundle manifest's schema uses, so the runtime needs no jsonschema.

It reads the KEYWORDS below and skips the ANNOTATIONS (a test keeps the schema to those). One rule is stricter
than JSON Schema's: an integer is a JSON number without a fraction (json gives 64.0 as a float, which the tokenizer
does not take).
"""

from __future__ import annotations

import json
import re

from tinyship.runtime.errors import TinyshipError

KEYWORDS = {"type", "enum", "minimum", "maximum", "minLength", "pattern", "required", "properties",
            "additionalProperties", "items", "minItems", "uniqueItems"}
ANNOTATIONS = {"$schema", "$id", "title", "description"}
TYPES = (  # JSON's name for what json reads and writes (bool first: a bool is an int in Python)
    (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), ((list, tuple), "array"), (dict, "object"),
    (type(None), "null"),
)


def validate(value, schema: dict, where: str, fix: str) -> None:
    """Raise TinyshipError '{where}: {field} {problem}: {fix}' at the first place value breaks schema."""
    problem = first_error(value, schema)
    if problem:
        raise TinyshipError(f"{where}: {problem}: {fix}")


def first_error(value, schema: dict, path: str = "") -> str | None:
    """The first field of value that breaks schema, with what is wrong; None when value conforms."""
    name = path or "the manifest"
    kind = next((name for types, name in TYPES if isinstance(value, types)), "not JSON")
    allowed = schema.get("type")
    if allowed is not None:
        allowed = [allowed] if isinstance(allowed, str) else allowed
        if kind not in allowed and not (kind == "integer" and "number" in allowed):
            return f"{name} is {_short(value)}, not of type {' or '.join(allowed)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{name} is {_short(value)}, not one of {', '.join(map(str, schema['enum']))}"
    if kind in ("integer", "number"):
        if value < schema.get("minimum", value):
            return f"{name} is {value}, below its minimum {schema['minimum']}"
        if value > schema.get("maximum", value):
            return f"{name} is {value}, above its maximum {schema['maximum']}"
    elif kind == "string":
        if len(value) < schema.get("minLength", 0):
            return f"{name} is {_short(value)}, shorter than its minLength {schema['minLength']}"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{name} is {_short(value)}, which does not match {schema['pattern']}"
    elif kind == "array":
        return _array_error(value, schema, path)
    elif kind == "object":
        return _object_error(value, schema, path)
    return None


def _array_error(value: list | tuple, schema: dict, path: str) -> str | None:
    if len(value) < schema.get("minItems", 0):
        return f"{path} has {len(value)} items, fewer than {schema['minItems']}"
    for i, item in enumerate(value):
        if schema.get("uniqueItems") and value.index(item) < i:
            return f"{path}[{i}] repeats {path}[{value.index(item)}] ({_short(item)})"
        if "items" in schema and (problem := first_error(item, schema["items"], f"{path}[{i}]")):
            return problem
    return None


def _object_error(value: dict, schema: dict, path: str) -> str | None:
    for key in schema.get("required", []):
        if key not in value:
            return f"{_field(path, key)} is missing"
    properties = schema.get("properties", {})
    others = schema.get("additionalProperties", True)
    for key, item in value.items():
        rule = properties.get(key, others)
        if rule is False:
            return f"{_field(path, key)} is not a field of {path or 'the manifest'} (it has {', '.join(properties)})"
        if rule is not True and (problem := first_error(item, rule, _field(path, key))):
            return problem
    return None


def _field(path: str, key: str) -> str:
    """A field's path: truncation.stride, or files['model.onnx'] for keys that are not plain names."""
    if not key.isidentifier():
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def _short(value) -> str:
    """The value as JSON writes it, cut to a readable length."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
