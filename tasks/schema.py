"""Every file patchgate writes for machines is checked against a JSON Schema in schemas/."""

from __future__ import annotations

import contextlib
import json
import os
import re
from functools import cache
from typing import Any

from .errors import PatchgateError

# Installed: patchgate/schemas/ (package data); in the source tree: schemas/ beside tasks/.
_HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_DIR = next(
    (
        d
        for d in (os.path.join(_HERE, "schemas"), os.path.join(os.path.dirname(_HERE), "schemas"))
        if os.path.isdir(d)
    ),
    os.path.join(os.path.dirname(_HERE), "schemas"),
)


@cache
def _validator(name: str) -> Any:
    # Imported here, not at the top: jsonschema costs ~60 ms to import and a no-op rerun
    # of verify never validates anything.
    import jsonschema
    from referencing import Registry, Resource

    schemas = {}
    for entry in sorted(os.listdir(SCHEMA_DIR)):
        with open(os.path.join(SCHEMA_DIR, entry), encoding="utf-8") as fh:
            schemas[entry] = json.load(fh)
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values()
    )
    return jsonschema.Draft202012Validator(schemas[name], registry=registry)


def validate(instance: Any, schema_name: str, stage: str, what: str) -> None:
    """Raise PatchgateError naming the key path and the reason of the first violation.

    Valid data (nearly always: patchgate wrote it) is confirmed by ``conforms``, a small
    checker of the keywords schemas/ uses, without importing jsonschema (~70 ms, paid by every
    command that runs a step). Anything else — invalid data, a keyword it does not know — goes
    to jsonschema, which has the last word and writes the message.
    """
    with contextlib.suppress(Unsure):
        if conforms(instance, schema_name):
            return
    errors = sorted(_validator(schema_name).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise PatchgateError(stage, f"{what}: {where}: {err.message}; fix that value")


# --- the fast path: a checker that may only ever say "valid" when jsonschema would -----------


class Unsure(Exception):
    """The data uses something ``conforms`` does not check: ask jsonschema."""


# Keywords that never make data invalid.
_ANNOTATIONS = frozenset(
    ("$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples")
)
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


@cache
def _documents() -> dict[str, dict[str, Any]]:
    docs = {}
    for entry in sorted(os.listdir(SCHEMA_DIR)):
        with open(os.path.join(SCHEMA_DIR, entry), encoding="utf-8") as fh:
            docs[entry] = json.load(fh)
    return docs


@cache
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def conforms(instance: Any, schema_name: str) -> bool:
    """Whether ``instance`` is valid against schemas/``schema_name``; raises Unsure if unsure."""
    doc = _documents()[schema_name]
    return _valid(instance, doc, doc)


def _resolve(ref: str, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    name, _, fragment = ref.partition("#")
    target = _documents().get(os.path.basename(name)) if name else doc
    if target is None or (fragment and not fragment.startswith("/")):
        raise Unsure(ref)
    node: Any = target
    for part in fragment.split("/")[1:] if fragment else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise Unsure(ref)
        node = node[part]
    return node, target


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        if isinstance(value, float):
            raise Unsure("integer-valued float")  # jsonschema accepts 1.0; stay out of it
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind not in _TYPES:
        raise Unsure(kind)
    return isinstance(value, _TYPES[kind])


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, and containers compare element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return False
    return bool(a == b)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _valid(value: Any, node: Any, doc: dict[str, Any]) -> bool:
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        raise Unsure("schema node")
    for key, rule in node.items():
        if key in _ANNOTATIONS or key in ("then", "else"):
            continue
        if key == "$ref":
            target, target_doc = _resolve(rule, doc)
            ok = _valid(value, target, target_doc)
        elif key == "type":
            kinds = rule if isinstance(rule, list) else [rule]
            ok = any(_is_type(value, k) for k in kinds)
        elif key == "enum":
            ok = any(_equal(value, option) for option in rule)
        elif key == "const":
            ok = _equal(value, rule)
        elif key == "properties":
            ok = not isinstance(value, dict) or all(
                _valid(value[name], sub, doc) for name, sub in rule.items() if name in value
            )
        elif key == "required":
            ok = not isinstance(value, dict) or all(name in value for name in rule)
        elif key == "additionalProperties":
            known = node.get("properties", {})
            ok = not isinstance(value, dict) or all(
                _valid(item, rule, doc) for name, item in value.items() if name not in known
            )
        elif key == "items":
            ok = not isinstance(value, list) or all(_valid(item, rule, doc) for item in value)
        elif key == "minItems":
            ok = not isinstance(value, list) or len(value) >= rule
        elif key == "minLength":
            ok = not isinstance(value, str) or len(value) >= rule
        elif key == "pattern":
            ok = not isinstance(value, str) or _pattern(rule).search(value) is not None
        elif key == "minimum":
            ok = not _number(value) or value >= rule
        elif key == "exclusiveMinimum":
            ok = not _number(value) or value > rule
        elif key == "allOf":
            ok = all(_valid(value, sub, doc) for sub in rule)
        elif key == "anyOf":
            ok = any(_valid(value, sub, doc) for sub in rule)
        elif key == "oneOf":
            ok = sum(1 for sub in rule if _valid(value, sub, doc)) == 1
        elif key == "if":
            branch = "then" if _valid(value, rule, doc) else "else"
            ok = branch not in node or _valid(value, node[branch], doc)
        else:
            raise Unsure(key)
        if not ok:
            return False
    return True
