"""Vocabularies: every STAGE the code names is a documented Stage; event kinds are the schema's."""

from __future__ import annotations

import ast
import json

from conftest import ROOT
from patchgate import provenance
from patchgate.errors import Stage
from patchgate.provenance import EventKind

TASKS = ROOT / "tasks"
STAGE_KEYWORDS = {"stage", "land_stage"}


def stages_named_in_code() -> dict[str, str]:
    """{stage literal: where} for every literal given as a stage anywhere in tasks/."""
    found: dict[str, str] = {}
    for path in sorted(TASKS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            literals: list[ast.expr] = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in ("PatchgateError", "StepFailed") and node.args:
                    literals.append(node.args[0])
                literals += [k.value for k in node.keywords if k.arg in STAGE_KEYWORDS]
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith("STAGE") for t in node.targets
            ):
                literals.append(node.value)
            for lit in literals:
                if isinstance(lit, ast.Constant) and isinstance(lit.value, str):
                    found[lit.value] = f"{path.relative_to(ROOT)}:{lit.lineno}"
    return found


def test_every_stage_the_code_names_is_a_stage() -> None:
    found = stages_named_in_code()
    unknown = {s: where for s, where in found.items() if s not in Stage.__members__}
    assert not unknown, f"add these to errors.Stage and docs/failures.md: {unknown}"
    assert len(found) >= 15  # the scan sees the code


def test_every_stage_is_documented() -> None:
    doc = (ROOT / "docs" / "failures.md").read_text()
    missing = [s.value for s in Stage if f"`{s.value}`" not in doc]
    assert not missing, f"docs/failures.md does not explain: {missing}"


def test_event_kinds_are_the_schemas() -> None:
    schema = json.loads((ROOT / "schemas" / "provenance-event.schema.json").read_text())
    assert sorted(k.value for k in EventKind) == sorted(schema["properties"]["event"]["enum"])
    assert tuple(EventKind) == provenance.EVENT_KINDS
