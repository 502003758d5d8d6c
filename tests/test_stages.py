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


# --- every error says what to do ---------------------------------------------------------------


def _literal_parts(expr: ast.expr) -> list[str | None] | None:
    """The text of a str literal, f-string or a + of them: None for a part that is computed."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, ast.JoinedStr):
        return [v.value if isinstance(v, ast.Constant) else None for v in expr.values]
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left, right = _literal_parts(expr.left), _literal_parts(expr.right)
        return None if left is None or right is None else left + right
    return None


def gives_a_fix(expr: ast.expr) -> bool:
    """A literal message "what happened; what to do": text before and after a "; "."""
    parts = _literal_parts(expr)
    if parts is None:
        return False
    for i, part in enumerate(parts):
        if part is not None and "; " in part:
            before, _, after = part.rpartition("; ")
            did = before.strip() or any(p is None or p.strip() for p in parts[:i])
            says = after.strip() or any(p is None or p.strip() for p in parts[i + 1 :])
            if did and says:
                return True
    return False


# Raise sites whose REASON is a verdict found at run time (a gate's finding, a scope problem, a
# worker's result): the finding is the message. Fixing them is a decision on the summary's
# wording (and on test_gates' expected lines); this list only shrinks.
VERDICT_SITES = {
    ("tasks/cluster.py", "result.reason or 'failed'"),
    ("tasks/gates.py", "reason"),
    ("tasks/scope.py", "problems[0]"),
    ("tasks/verify.py", "f'after the fixing gates: {problems[0]}'"),
    ("tasks/verify.py", "first"),
}

VERDICT_SEEN: set[tuple[str, str]] = set()

# Raise sites that re-raise a refusal a setup task's action recorded (tasks/prepare.py): the
# message is a PatchgateError's, checked at the site that first raised it.
RECORDED_SITES = {
    ("tasks/prepare.py", "str(message)"),
    ("tasks/rollback.py", "*prepared['refused']"),
}

# Raise sites whose message comes from a callback: the helpers that can be it, each checked.
CALLBACK_SITES = {("tasks/lock.py", "busy()"): ("busy_message", "issue_busy_message")}


def _assigned(scope: ast.AST) -> dict[str, list[ast.expr]]:
    """Name -> the values assigned to it directly in ``scope``'s body (not in nested defs)."""
    found: dict[str, list[ast.expr]] = {}
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append(node.value)
        todo.extend(ast.iter_child_nodes(node))
    return found


class Module:
    """One module's names, to follow a message to the literal that gives its fix."""

    def __init__(self, tree: ast.Module) -> None:
        self.constants = _assigned(tree)
        self.functions = {
            n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
        }  # nested helpers too (lock.acquire's busy)
        self.locals: dict[int, dict[str, list[ast.expr]]] = {}  # per function, when needed

    def fixed(self, expr: ast.expr, scope: ast.FunctionDef | None = None, depth: int = 0) -> bool:
        """``expr`` gives a fix: a literal with one; a name assigned only such values (in the
        function or the module); a call of this module's helper (or ``redact``) whose every
        return value gives one; or a re-raise: another error's ``.message`` (checked where that
        error was made), or the ``message`` parameter an action re-raises (callers pass one)."""
        if gives_a_fix(expr):
            return True
        if depth > 4:
            return False
        if isinstance(expr, ast.Attribute) and expr.attr == "message":
            return True
        if isinstance(expr, ast.Name):
            if scope is not None:
                if expr.id == "message" and expr.id in {a.arg for a in scope.args.args}:
                    return True
                if id(scope) not in self.locals:
                    self.locals[id(scope)] = _assigned(scope)
                local = self.locals[id(scope)].get(expr.id)
                if local:
                    return all(self.fixed(v, scope, depth + 1) for v in local)
            values = self.constants.get(expr.id)
            return bool(values) and all(self.fixed(v, None, depth + 1) for v in values or [])
        if isinstance(expr, ast.Call):
            name = getattr(expr.func, "id", getattr(expr.func, "attr", ""))
            if name == "redact" and expr.args:  # secrets out, the fix stays
                return self.fixed(expr.args[0], scope, depth + 1)
            helper = self.functions.get(name)
            if helper is not None:
                returns = [
                    r.value for r in ast.walk(helper) if isinstance(r, ast.Return) and r.value
                ]
                return bool(returns) and all(self.fixed(r, helper, depth + 1) for r in returns)
        return False


def error_constructions(tree: ast.AST) -> list[tuple[ast.Call, ast.FunctionDef | None]]:
    """Every ``PatchgateError(...)`` in ``tree``, with the innermost function it is in."""
    found = []
    todo: list[tuple[ast.AST, ast.FunctionDef | None]] = [(tree, None)]
    while todo:
        node, func = todo.pop()
        func = node if isinstance(node, ast.FunctionDef) else func
        callee = getattr(node, "func", None)
        if isinstance(node, ast.Call) and getattr(callee, "id", getattr(callee, "attr", "")) == (
            "PatchgateError"
        ):
            found.append((node, func))
        todo.extend((child, func) for child in ast.iter_child_nodes(node))
    return sorted(found, key=lambda site: site[0].lineno)


def raise_sites_without_a_fix() -> list[str]:
    found = []
    for path in sorted(TASKS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        module = Module(tree)
        rel = str(path.relative_to(ROOT))
        for node, scope in error_constructions(tree):
            if any(k.arg == "fix" for k in node.keywords):
                continue
            if any((rel, ast.unparse(arg)) in RECORDED_SITES for arg in node.args[1:] or node.args):
                continue
            if len(node.args) >= 2:
                if module.fixed(node.args[1], scope):
                    continue
                if (rel, ast.unparse(node.args[1])) in VERDICT_SITES:
                    VERDICT_SEEN.add((rel, ast.unparse(node.args[1])))
                    continue
                helpers = CALLBACK_SITES.get((rel, ast.unparse(node.args[1])), ())
                if helpers and all(module.fixed(ast.Call(ast.Name(h), [], [])) for h in helpers):
                    continue
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node)[:90]}")
    return found


def test_every_error_says_what_to_do() -> None:
    missing = raise_sites_without_a_fix()
    assert VERDICT_SEEN == VERDICT_SITES, "drop the verdict sites no longer in the code"
    assert not missing, "give these a fix (fix=..., or '; what to do' in the message):\n" + (
        "\n".join(missing)
    )


def test_the_fix_rule_sees_a_missing_fix() -> None:
    def judged(source: str) -> bool:
        tree = ast.parse(source)
        ((call, scope),) = error_constructions(tree)
        return Module(tree).fixed(call.args[1], scope) or any(k.arg == "fix" for k in call.keywords)

    assert judged('PatchgateError("X", "it broke; do this")')
    assert judged('PatchgateError("X", f"{a} broke; {b}")')
    assert judged('PatchgateError("X", "it broke", fix="do this")')
    assert judged('M = "it broke; do this"\nPatchgateError("X", M)')
    assert judged('def m(a):\n    return f"{a} broke; do this"\nPatchgateError("X", m(1))')
    assert not judged('PatchgateError("X", "it broke")')
    assert not judged('PatchgateError("X", "it broke; ")')
    assert not judged('PatchgateError("X", f"{a} broke")')
    assert not judged('PatchgateError("X", reason)')
    assert not judged('def m(a):\n    return "it broke"\nPatchgateError("X", m(1))')
    assert judged('def f():\n    r = "it broke; do this"\n    PatchgateError("X", r)')
    assert not judged('def f():\n    r = "it broke"\n    PatchgateError("X", r)')
    assert judged('PatchgateError("X", redact(err.message))')
