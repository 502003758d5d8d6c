"""Live moved since a workspace's base: what re-verifying may do, and the check that nothing
that landed on live in between is undone (issue 11, item 8; users read docs/live-changed.md).

The ``live_changed`` policy decides what happens when live changed a file the patch changes:

    fail                 (default) refuse, naming the files and the commits that changed them
    rebase               re-run the patch on the new base, verify again
    overwrite_live       carry the verified changes onto live's new version of each such file
                         (a three-way merge); where they touch the same lines: refuse
    overwrite_workspace  keep live's version of those files, carry the rest, verify again

When live moved only in other files, the patch is re-run on the new base (all policies).
Whatever ran, ``check_kept`` then refuses a tree that would revert what landed: each path live
changed since the base and the patch changes too must still hold live's change (a three-way
merge of it into the result changes nothing). The plan is a plain dict (an action argument):
``mode`` (rebase | merge | keep_live), ``policy``, ``old_base``, ``new_base``, ``base_tree``,
``clash``, ``landed``, and for merge and keep_live the verified ``tree``, ``drop`` and ``files``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import git, report
from .errors import PatchgateError
from .steps import read_json
from .workspace import Workspace

if TYPE_CHECKING:
    from .workspace import Meta, Result

DOC = "docs/live-changed.md"
SHOWN = 3  # commits named in a message
REGULAR = {"100644": 0o644, "100755": 0o755}


def moved_paths(repo: str, old: str, new: str) -> set[str]:
    return git.changed_paths(repo, old, new)


def landed(repo: str, old: str, new: str, paths: list[str]) -> str:
    """The commits between ``old`` and ``new`` that changed ``paths``: "abc1234 subject, …"."""
    lines = git.short_log(repo, f"{old}..{new}", paths, SHOWN + 1)
    shown = ", ".join(f"{ln[:60]}" for ln in lines[:SHOWN])
    return shown + (", …" if len(lines) > SHOWN else "") if shown else "no commit named"


def plan(live: str, meta: Meta, head: str, verified: Result, policy: str) -> dict[str, Any]:
    """What re-verifying a workspace verified on ``meta``'s base does now that live is ``head``."""
    old = meta.base_sha
    clash = sorted(moved_paths(live, old, head) & set(verified.files))
    record: dict[str, Any] = {
        "policy": policy,
        "old_base": old,
        "new_base": head,
        "base_tree": meta.base_tree,
        "clash": clash,
        "landed": landed(live, old, head, clash),
        "mode": "rebase",
    }
    if not clash or policy == "rebase" or (policy != "fail" and verified.tree is None):
        return record
    if policy == "fail":
        raise PatchgateError("PROMOTE", refusal(clash, record["landed"]))
    drop = clash if policy == "overwrite_workspace" else []
    return {
        **record,
        "mode": "keep_live" if drop else "merge",
        "tree": verified.tree,
        "drop": drop,
        "files": verified.files,
    }


def refusal(clash: list[str], commits: str) -> str:
    return (
        f"live changed since the workspace base in {', '.join(clash)} ({commits}); nothing "
        "landed is ever reverted: choose live_changed=rebase (re-run the patch on live and "
        "verify again), overwrite_live (merge the verified changes into live's version) or "
        f"overwrite_workspace (keep live's version of those files), see {DOC}"
    )


def note(carry: dict[str, Any]) -> str:
    """One line for the log and the summary (NOTE:): which policy did what."""
    moved = f"live moved {carry['old_base'][:12]} -> {carry['new_base'][:12]}"
    if not carry["clash"]:
        return (
            f"{moved} since the base, not in the patch's files: the patch was re-run on the "
            "new base and verified again"
        )
    where = f"live changed {', '.join(carry['clash'])} since the base ({carry['landed']})"
    done = {
        "rebase": "the patch was re-run on the new base and verified again (rebase)",
        "merge": "the verified changes were merged into live's version and verified again",
        "keep_live": "live's version of them was kept, the patch's changes to them dropped; "
        "the rest was carried and verified again",
    }[carry["mode"]]
    return f"live_changed={carry['policy']}: {where}: {done}; nothing that landed is reverted"


def _bytes(repo: str, found: tuple[str, str] | None) -> bytes:
    return git.blob_bytes(repo, found[1]) if found else b""


def carry_merged(repo: str, carry: dict[str, Any]) -> None:
    """overwrite_live: merge each verified file live changed into live's version, in place."""
    for path in carry["clash"]:
        base = git.entry(repo, carry["base_tree"], path)
        ours = git.entry(repo, carry["new_base"], path)
        theirs = git.entry(repo, carry["tree"], path)
        modes = {e[0] for e in (base, ours, theirs) if e}
        conflicts, merged = -1, b""
        if base and ours and theirs and modes <= set(REGULAR):
            conflicts, merged = git.merge_file(
                repo, _bytes(repo, ours), _bytes(repo, base), _bytes(repo, theirs)
            )
        if conflicts != 0:
            why = (
                "in the lines the verified patch changes"
                if conflicts > 0
                else "(added, deleted, binary or not a regular file on one side)"
            )
            raise PatchgateError(
                "APPLY",
                f"live_changed=overwrite_live: live changed {path} since the workspace base "
                f"({carry['landed']}) {why}; carrying the verified version would revert "
                "that, so nothing was carried: re-run the patch on live (live_changed=rebase) "
                f"or update the patch, see {DOC}",
            )
        full = os.path.join(repo, path)
        with open(full, "wb") as fh:
            fh.write(merged)
        assert theirs is not None
        os.chmod(full, REGULAR[theirs[0]])


def check_kept(repo: str, carry: dict[str, Any], tree: str, changes: list[git.Change]) -> None:
    """Refuse ``tree`` (the new base plus ``changes``) if it reverts what landed since the base."""
    moved = moved_paths(repo, carry["old_base"], carry["new_base"])
    for change in changes:
        if change.path not in moved:
            continue
        base = git.entry(repo, carry["old_base"], change.path)
        ours = git.entry(repo, carry["new_base"], change.path)
        result = None if change.status == "D" else (change.mode, change.blob)
        why = _undoes(repo, base, ours, result)
        if why:
            commits = landed(repo, carry["old_base"], carry["new_base"], [change.path])
            raise PatchgateError(
                "APPLY",
                f"live_changed={carry['policy']}: on the new base the patch {why} in "
                f"{change.path} since the workspace base ({commits}); nothing landed is "
                "reverted, so nothing was verified: update the patch for live's version "
                f"and verify it again, see {DOC}",
            )


def _undoes(
    repo: str,
    base: tuple[str, str] | None,
    ours: tuple[str, str] | None,
    result: tuple[str, str] | None,
) -> str | None:
    """Why ``result`` does not keep live's change (base -> ours) of one path; None if it does."""
    if ours is None:
        return "brings back a file live deleted"
    if result is None:
        return "deletes a file live changed"
    if base is not None and base[0] != ours[0] and result[0] != ours[0]:
        return "reverts the mode live set"
    if {ours[0], result[0]} - set(REGULAR):
        return "replaces what landed (not a regular file)"
    mine = _bytes(repo, result)
    conflicts, merged = git.merge_file(repo, mine, _bytes(repo, base), _bytes(repo, ours))
    if conflicts > 0:
        return "changes the same lines as what landed on live"
    if conflicts < 0 or merged != mine:
        return "reverts what landed on live"
    return None


def log_note(log: str, carry: dict[str, Any]) -> str:
    text = note(carry)
    report.log(log, f"apply: {text}")
    return text


def applied_note(ws: Workspace) -> str | None:
    """The apply step's line on live moving since the last verification, if it has one."""
    try:
        note = read_json(ws.step_file("apply")).get("live_changed")
    except (OSError, ValueError):
        return None
    return str(note) if note else None
