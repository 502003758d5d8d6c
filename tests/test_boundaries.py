"""The module boundaries stay where docs/architecture.md says they are (issue 13, item 4).

Read from the source with ``ast``, in milliseconds: no lifecycle module uses another lifecycle
module as a library, directly or through a shared module, but for the edges listed (with the
reason) in ``ALLOWED``; no module but ``tasks/git.py`` starts a git command.
"""

from __future__ import annotations

import ast
import functools
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

# dodo.py registers the task creators: importing ``task_*`` of every lifecycle is its purpose.
REGISTRY = "dodo"

# (importer, imported lifecycle module) -> exactly the names the importer uses of it. Every
# entry says why. An edge or a name not listed fails; so does a listed name (or edge) no longer
# used: delete it. A shared module (not a lifecycle) is held to this too, or it would make a
# lifecycle module the library of every lifecycle that imports the shared one.
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    # verify's chain builders are the verify pipeline's public face: a landing of a verified
    # tree composes verify's own chain as its dependency (promote: the chains a promotion
    # needs; rollback: the chain that verifies the revert). See docs/architecture.md.
    ("promote", "verify"): frozenset({"requested_chains", "declared"}),
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
    # audit.py keeps the audit commands' creators and actions (its concerns are audit_ledger,
    # audit_history, audit_check, audit_report): promote runs the project's audit command, a
    # record by hand goes through provenance.
    ("promote", "audit"): frozenset({"run_audit_command"}),
    ("provenance", "audit"): frozenset({"record"}),  # a lazy import: audit imports provenance
    # The landing pipeline runs the audit after every landing (landing.finish_landing).
    ("landing", "post_audit"): frozenset({"after_landing"}),
    # status.py is ``doit status``: it shows the state each lifecycle keeps, read by its owner.
    ("status", "cluster"): frozenset({"verified_elsewhere"}),
    ("status", "propose"): frozenset({"proposals_without_workspace", "status_note"}),
    ("status", "watch"): frozenset({"status_lines"}),
}


@functools.cache
def _parsed(tasks: Path) -> tuple[tuple[Path, ast.Module], ...]:
    """Every module of ``tasks`` (and its subpackages), parsed once per test session."""
    paths = sorted(tasks.rglob("*.py"))
    return tuple((p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in paths)


def _modules() -> Iterator[tuple[str, ast.Module]]:
    """The top-level modules of tasks/ by name (the lifecycle modules and what they import)."""
    for path, tree in _parsed(TASKS):
        if path.parent == TASKS:
            yield path.stem, tree


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


@functools.cache
def lifecycle_edges() -> dict[tuple[str, str], set[str]]:
    """(importer, imported lifecycle module) -> the names used, for every module but dodo.py."""
    edges: dict[tuple[str, str], set[str]] = {}
    for module, tree in _modules():
        if module != REGISTRY:
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
        "a module uses a lifecycle module as a library; move the shared code to a module "
        "that owns it (docs/architecture.md, module map): " + "; ".join(wrong)
    )


def test_the_allowed_edges_are_all_still_used() -> None:
    edges = lifecycle_edges()
    gone = [
        f"{a} -> {b}: {', '.join(sorted(names - edges.get((a, b), set())))}"
        for (a, b), names in sorted(ALLOWED.items())
        if names - edges.get((a, b), set())
    ]
    assert not gone, f"delete from ALLOWED what is no longer used: {'; '.join(gone)}"


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
        for path, tree in _parsed(TASKS)
        if path != TASKS / "git.py"
        for line in raw_git_commands(tree)
    ]
    assert not found, (
        "a git command line outside tasks/git.py; make it a named function there: "
        + ", ".join(found)
    )
    source = 'x = ["git", "log"]\n_logged(log, "git apply", ("git", "apply"), done)\n'
    assert raw_git_commands(ast.parse(source)) == [1]


# git.run/git.out calls left outside git.py, per module (issue 13, item 4): none are left.
# Never add one: a new git command is a named function in git.py.
GIT_RUN_LEFT: dict[str, int] = {}


def git_run_calls(tree: ast.Module) -> int:
    """Calls of ``git.run(...)`` / ``git.out(...)``: a git command line built outside git.py."""
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("run", "out")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "git"
    )


def test_no_new_git_command_lines_outside_git_py() -> None:
    more = []
    for path, tree in _parsed(TASKS):
        name = str(path.relative_to(TASKS.parent))
        if path == TASKS / "git.py":
            continue
        calls = git_run_calls(tree)
        if calls > GIT_RUN_LEFT.get(name, 0):
            more.append(f"{name}: {calls} (at most {GIT_RUN_LEFT.get(name, 0)})")
    assert not more, (
        "git.run/git.out calls outside git.py; add a named function to git.py instead: "
        + ", ".join(more)
    )
    assert git_run_calls(ast.parse("git.run(r, 'log')\ngit.out(r, 'x')\ngit.head(r)\n")) == 2
