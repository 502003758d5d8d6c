"""The module boundaries stay where docs/architecture.md says they are (issue 13, item 4).

Read from the source with ``ast``, in milliseconds: no lifecycle module uses another lifecycle
module as a library, but for the edges listed (with the reason) in ``ALLOWED``; no module but
``tasks/git.py`` starts a git command.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TASKS = Path(__file__).resolve().parent.parent / "tasks"

# One module per lifecycle command or lifecycle step (docs/architecture.md, module map).
LIFECYCLE = frozenset(
    {
        "verify",
        "promote",
        "finalize",
        "rollback",
        "propose",
        "watch",
        "monitor",
        "audit",
        "cluster",
        "post_audit",
    }
)

# (importer, imported) -> the names of ``imported`` it may use. Every entry says why; an edge
# not listed, or a name not listed, fails. An entry whose edge is gone fails too: delete it.
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    # verify's chain builders are the verify pipeline's public face: a landing of a verified
    # tree composes verify's own chain as its dependency (promote: the chains a promotion
    # needs; rollback: the chain that verifies the revert). See docs/architecture.md.
    ("promote", "verify"): frozenset({"requested_chains"}),
    ("rollback", "verify"): frozenset({"chain"}),
    # cluster.py owns the Dask boundary (issue 17): verify hands a chain to it, promote has it
    # recompute a tree a worker verified.
    ("verify", "cluster"): frozenset({"wanted", "cluster_step"}),
    ("promote", "cluster"): frozenset({"recheck"}),
    # The cluster worker records and re-checks a verdict with verify's own functions (lazy
    # imports: verify declares the cluster step). Left for a "verification result" module once
    # the result is a typed record.
    ("cluster", "verify"): frozenset({"record_verdict", "declared_files", "final_changes"}),
    # monitor.py owns the metrics-endpoint boundary; watch polls it.
    ("watch", "monitor"): frozenset({"MonitorSettings", "monitor_settings", "poll"}),
    # post_audit.py is the landing pipeline's after-landing audit hook (landing.finish_landing
    # runs it); promote calls its rerun check.
    ("promote", "post_audit"): frozenset({"recheck"}),
    # audit.py is being split by concern (issue 13, item 4, another branch); these edges move
    # with that split and are to be deleted here when they go.
    ("promote", "audit"): frozenset({"run_audit_command"}),
    ("rollback", "audit"): frozenset({"same_commit", "rollback_events"}),
    ("audit", "propose"): frozenset({"confidences"}),
    ("post_audit", "audit"): frozenset({"audit"}),
}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(TASKS.glob("*.py")):
        yield path.stem, ast.parse(path.read_text(encoding="utf-8"), str(path))


def lifecycle_uses(module: str, tree: ast.Module) -> dict[str, set[str]]:
    """imported lifecycle module -> the names ``module`` uses of it (imports anywhere in it)."""
    bound: dict[str, str] = {}  # local name -> the lifecycle module it stands for
    uses: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module is None:  # from . import verify [as v]
            for alias in node.names:
                if alias.name in LIFECYCLE and alias.name != module:
                    bound[alias.asname or alias.name] = alias.name
                    uses.setdefault(alias.name, set())
        else:  # from .verify import chain
            target = node.module.split(".")[0]
            if target in LIFECYCLE and target != module:
                uses.setdefault(target, set()).update(a.name for a in node.names)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
        ):
            uses[bound[node.value.id]].add(node.attr)
    return uses


def lifecycle_edges() -> dict[tuple[str, str], set[str]]:
    edges: dict[tuple[str, str], set[str]] = {}
    for module, tree in _modules():
        if module in LIFECYCLE:
            for imported, names in lifecycle_uses(module, tree).items():
                edges[(module, imported)] = names
    return edges


def test_no_lifecycle_module_uses_another_as_a_library() -> None:
    edges = lifecycle_edges()
    wrong = []
    for (importer, imported), names in sorted(edges.items()):
        extra = names - ALLOWED.get((importer, imported), frozenset())
        if extra:
            wrong.append(f"{importer} -> {imported}: {', '.join(sorted(extra))}")
    assert not wrong, (
        "a lifecycle module uses another lifecycle module as a library; move the shared code "
        "to a module that owns it (docs/architecture.md, module map): " + "; ".join(wrong)
    )


def test_the_allowed_edges_are_all_still_there() -> None:
    edges = lifecycle_edges()
    gone = [f"{a} -> {b}" for (a, b) in sorted(ALLOWED) if (a, b) not in edges]
    assert not gone, f"delete these edges from ALLOWED, they are gone: {', '.join(gone)}"


def test_the_rule_is_checked_on_real_imports() -> None:
    """The parser sees every form: ``from . import``, ``as``, ``from .x import``, lazy ones."""
    source = (
        "from . import git, rollback as rb\n"
        "from .verify import chain\n"
        "def f():\n"
        "    from .audit import same_commit\n"
        "    return rb.make_plan, rb.plan_lines, git.head\n"
    )
    uses = lifecycle_uses("watch", ast.parse(source))
    assert uses == {
        "rollback": {"make_plan", "plan_lines"},
        "verify": {"chain"},
        "audit": {"same_commit"},
    }
    assert lifecycle_uses("verify", ast.parse("from .verify import chain\n")) == {}


def raw_git_commands(tree: ast.Module) -> list[int]:
    """Lines of argv literals starting with "git" (a git command started outside git.py).

    A literal given to ``_logged`` is the command line a log shows, not one that runs."""
    shown = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "_logged"
        for arg in node.args
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Tuple | ast.List)
        and node.elts
        and isinstance(node.elts[0], ast.Constant)
        and node.elts[0].value == "git"
        and id(node) not in shown
    ]


def test_git_commands_are_started_by_git_py_only() -> None:
    found = [
        f"{path.relative_to(TASKS.parent)}:{line}"
        for path in sorted(TASKS.rglob("*.py"))
        if path != TASKS / "git.py"
        for line in raw_git_commands(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, (
        "a git command line outside tasks/git.py; make it a named function there: "
        + ", ".join(found)
    )
    source = 'x = ["git", "log"]\n_logged(log, "git apply", ("git", "apply"), done)\n'
    assert raw_git_commands(ast.parse(source)) == [1]
