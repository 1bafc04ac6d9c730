"""The constraints ``validate`` sends as structured outputs, and pure verifiers for the answers.

The verifiers do not trust the server: each output is re-checked against its constraint here
(JSON parsed and checked against the schema, the regex re-matched, the choice looked up, the
grammar's language re-matched with an equivalent regular expression).
"""
from __future__ import annotations

import json
import re
from typing import Any

# Bounded on purpose: a random-weight model fills every free slot, so unbounded strings or
# numbers would run into max_tokens. Enums, booleans and small integers keep answers short.
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
        "size": {"type": "string", "enum": ["S", "M", "L"]},
    },
    "required": ["ok", "color", "size"],
    "additionalProperties": False,
}
REGEX = r"[a-c]{3}-[0-9]{2}"
CHOICES = ["alpha", "beta", "gamma"]
# GBNF (vLLM's default backend xgrammar reads it; EBNF-compatible). Its language, as a regex:
GRAMMAR = 'root ::= "sum(" num "," num ")"\nnum ::= [1-9] [0-9]?\n'
GRAMMAR_LANGUAGE = r"sum\([1-9][0-9]?,[1-9][0-9]?\)"


def schema_errors(instance: Any, schema: dict, path: str = "$") -> list[str]:
    """Why ``instance`` breaks ``schema`` (a JSON-Schema subset: type, enum, const, properties,
    required, additionalProperties, items, min/maxItems, minimum/maximum, min/maxLength,
    pattern); empty when it conforms."""
    errs: list[str] = []
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_is_type(instance, x) for x in types):
            return [f"{path}: expected {t}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{path}: {instance!r} not one of {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{path}: {instance!r} != {schema['const']!r}")
    if isinstance(instance, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or ():
            if key not in instance:
                errs.append(f"{path}: missing required {key!r}")
        for key, val in instance.items():
            if key in props:
                errs += schema_errors(val, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected property {key!r}")
    if isinstance(instance, list):
        if "items" in schema:
            for i, v in enumerate(instance):
                errs += schema_errors(v, schema["items"], f"{path}[{i}]")
        if len(instance) < schema.get("minItems", 0):
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errs.append(f"{path}: more than {schema['maxItems']} items")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errs.append(f"{path}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errs.append(f"{path}: {instance} > maximum {schema['maximum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errs.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errs.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errs.append(f"{path}: does not match {schema['pattern']!r}")
    return errs


def _is_type(v: Any, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "null":
        return v is None
    return False


def verify(kind: str, text: str) -> str | None:
    """None when ``text`` satisfies the ``kind`` constraint, else why not (one line)."""
    if kind == "json":
        try:
            doc = json.loads(text)
        except ValueError:
            return f"not JSON: {text[:80]!r}"
        errs = schema_errors(doc, JSON_SCHEMA)
        return f"breaks the schema: {errs[0]} in {text[:80]!r}" if errs else None
    if kind == "regex":
        return None if re.fullmatch(REGEX, text) else f"{text[:80]!r} does not match /{REGEX}/"
    if kind == "choice":
        return None if text in CHOICES else f"{text[:80]!r} is not one of {CHOICES}"
    if kind == "grammar":
        return None if re.fullmatch(GRAMMAR_LANGUAGE, text) else \
            f"{text[:80]!r} is not in the grammar's language"
    raise ValueError(f"unknown constraint kind {kind!r}")
