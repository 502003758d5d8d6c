"""Every file patchgate writes for machines is checked against a JSON Schema in schemas/."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

from tasks.errors import PatchgateError

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")


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
    """Raise PatchgateError naming the key path and the reason of the first violation."""
    errors = sorted(_validator(schema_name).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise PatchgateError(stage, f"{what}: {where}: {err.message}")
