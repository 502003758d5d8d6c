"""The scope step: what the patch changed must be what it declared."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import config, git, report
from .errors import PatchgateError
from .steps import read_json, write_json
from .workspace import Workspace

SYMLINK_MODE = "120000"
# patchgate's own files, relative to the project folder: a patch that changes them changes what
# judges the next patch (jail: none, an audit_command run as root). Issue 12.
PROTECTED = ("patchgate.yaml", "dodo.py", "patches", "audit")
ALLOW_PROTECTED = "allow_protected"  # a command-line variable only, never a config key


def protected_paths(root: str, live: str) -> list[str]:
    """patchgate's own paths as paths in live (none when the project folder is not in live)."""
    rel = os.path.relpath(os.path.realpath(root), os.path.realpath(live))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return []
    prefix = "" if rel == os.curdir else rel.replace(os.sep, "/") + "/"
    return [prefix + name for name in PROTECTED]


def touched_protected(paths: Sequence[str], protected: Sequence[str]) -> list[str]:
    """The ``paths`` that are, or lie in, a protected path."""
    return sorted(p for p in paths if any(p == q or p.startswith(q + "/") for q in protected))


def protected_allowed() -> bool:
    """The operator said allow_protected=1 on this command's line (patchgate.yaml cannot)."""
    return (config.variable(ALLOW_PROTECTED) or "").lower() in config.TRUE_WORDS


def protected_problem(touched: Sequence[str]) -> str:
    return (
        f"the patch changes patchgate's own files: {', '.join(touched)}; a patch may not change "
        f"what verifies and lands it, unless the operator passes {ALLOW_PROTECTED}=1 to this "
        "verify and to its promote"
    )


def check_protected_landing(root: str, live: str, paths: Sequence[str]) -> list[str]:
    """Promote's check: the patchgate files ``paths`` change, allowed on this command line;
    PatchgateError("SCOPE") when they change some and the operator did not allow it."""
    touched = touched_protected(paths, protected_paths(root, live))
    if touched and not protected_allowed():
        raise PatchgateError("SCOPE", protected_problem(touched))
    return touched


def protected_summary(state: str) -> dict[str, str]:
    """PROTECTED: the patchgate files a promotion changed (its preflight.json in ``state``)."""
    path = os.path.join(state, "preflight.json")
    touched = read_json(path).get("protected") if os.path.exists(path) else None
    if not touched:
        return {}
    return {"PROTECTED": f"{', '.join(touched)} (patchgate's own; {ALLOW_PROTECTED}=1)"}


def judge(
    declared: list[str],
    changes: list[dict[str, Any]],
    rules: dict[str, bool],
    protected: Sequence[str] = (),
) -> list[str]:
    """Every scope violation, worded for the REASON line; empty when the patch is in scope.

    ``protected``: paths no change may touch (patchgate's own; the caller has already
    left them out when the operator allowed it).
    """
    changed = sorted(c["path"] for c in changes)
    # Sets: 100,000 changed paths are judged in well under a second, not hours (issue 12).
    declared_set, changed_set = set(declared), set(changed)
    # Never overridable: git sees a nested repository as one entry, not the files inside it.
    problems = [git.nested_repository(c["path"]) for c in changes if c["mode"] == git.GITLINK_MODE]
    problems += [
        f"{path} turns from a file into a folder or back; promote lands files one by one over "
        "live's and cannot do that: delete it in one patch, promote, then add the new one"
        for path in swapped(changes)
    ]
    touched = touched_protected(changed, protected)
    if touched:
        problems.insert(0, protected_problem(touched))
    undeclared = [p for p in changed if p not in declared_set]
    untouched = [p for p in declared if p not in changed_set]
    if not changed and not rules["allow_noop"]:
        problems.append("the patch changed nothing; fix it, or pass allow_noop=1 for a dry run")
    if undeclared and not rules["allow_undeclared"]:
        problems.append(
            f"changed but not declared in FILES: {', '.join(undeclared)}; "
            "add them to FILES or stop touching them (allow_undeclared=1 overrides)"
        )
    if untouched and changed and not rules["allow_untouched"]:
        problems.append(
            f"declared in FILES but not changed: {', '.join(untouched)}; "
            "drop them from FILES (allow_untouched=1 overrides)"
        )
    return problems


def swapped(changes: list[dict[str, Any]]) -> list[str]:
    """Paths deleted as a file and added as a folder (or the reverse) by the same patch."""
    deleted = {c["path"] for c in changes if c["status"] == "D"}
    added = {c["path"] for c in changes if c["status"] != "D"}
    found = set()
    for inner in deleted | added:
        parts = inner.split("/")
        for n in range(1, len(parts)):
            outer = "/".join(parts[:n])
            if (outer in deleted and inner in added) or (outer in added and inner in deleted):
                found.add(outer)
    return sorted(found)


def live_of(ws: Workspace) -> str:
    return ws.read_meta().live_repo


def check_scope(ws_dir: str, source: str, rules: dict[str, bool], log: str) -> None:
    """Action of the scope step, on the changes recorded by apply."""
    ws = Workspace.at(ws_dir)
    applied = read_json(source)
    protected = [] if protected_allowed() else protected_paths(ws.root, live_of(ws))
    problems = judge(applied["files"], applied["changes"], rules, protected)
    links = [c["path"] for c in applied["changes"] if c["mode"] == SYMLINK_MODE]
    verdict = {
        "verdict": "fail" if problems else "pass",
        "problems": problems,
        "changed": [c["path"] for c in applied["changes"]],
        "symlinks": links,
        "rules": rules,
    }
    write_json(ws.step_file("scope"), verdict, "step-result.schema.json")
    if not protected:
        changed = [c["path"] for c in applied["changes"]]
        allowed = touched_protected(changed, protected_paths(ws.root, live_of(ws)))
        if allowed:
            report.log(log, f"scope: {ALLOW_PROTECTED}=1: patchgate's own {', '.join(allowed)}")
    for line in problems or ["pass"]:
        report.log(log, f"scope: {line}")
    if problems:
        raise PatchgateError("SCOPE", problems[0])
