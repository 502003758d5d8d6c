"""The rollback plan: what reverting a commit of live would do, computed without touching live.

Shared by ``doit rollback`` (which shows it, and lands it once confirmed) and ``doit watch``
(which proposes it when a landing's checks fail): the commit inspected (``inspect_commit``),
the exact revert computed as ``git revert`` would in a private index and object directory
(``compute_revert``), the later commits touching its files, the token binding live's HEAD, the
commit and that revert (``make_plan``), and the plan as the operator reads it
(``plan_lines``, ending in the exact ``confirm_line``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

from . import audit_ledger, git, trailers
from .errors import PatchgateError
from .live import first_problem

ROLLBACK_DIR = os.path.join("patches", ".state", "rollback")
TOKEN_LENGTH = 12
SHOWN_LATER = 20
# Flags that make a diff the same bytes whatever the user's diff configuration says.
DIFF_FLAGS = (
    "-p",
    "--binary",
    "--full-index",
    "--no-renames",
    "--no-ext-diff",
    "--no-textconv",
    "--no-color",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
_REVERTS_LINE = re.compile(r"^This reverts commit ([0-9a-f]{7,64})\b", re.MULTILINE)
# What git apply says about a file it cannot revert (three-way or direct).
_CONFLICT_LINES = tuple(
    re.compile(p)
    for p in (
        r"^error: patch failed: (?P<path>.+):\d+$",
        r"^error: (?P<path>.+): patch does not apply$",
        r"^error: (?P<path>.+): does not exist in index$",
        r"^error: (?P<path>.+): already exists in index$",
        r"^error: (?P<path>.+): does not match index$",
        r"^error: cannot read the current contents of '(?P<path>.+)'$",
        r"^Applied patch to '(?P<path>.+)' with conflicts\.$",
        r"^U (?P<path>.+)$",
    )
)


# --- the commit to roll back --------------------------------------------------------------------


def revert_subject(subject: str) -> str:
    """``Revert "x"``; the revert of a revert re-applies: ``Reapply "x"`` (as git does)."""
    if subject.startswith('Revert "') and subject.endswith('"') and len(subject) > 9:
        return f'Reapply "{subject[len("Revert ") + 1 :]}'
    return f'Revert "{subject}"'


def inspect_commit(live: str, raw: str, head: str, branch: str) -> dict[str, Any]:
    """What the plan says about commit ``raw``; refuses what cannot be rolled back."""
    sha = git.commit_of(live, raw)
    if sha is None:
        raise PatchgateError(
            "PREFLIGHT",
            f"sha={raw} is not a commit in live ({live}); find the commit to roll back with "
            f"doit history or git -C {live} log --oneline",
        )
    if not git.is_ancestor(live, sha, head):
        raise PatchgateError(
            "PREFLIGHT",
            f"commit {sha[:12]} is not on {branch} (live's HEAD {head[:12]} does not contain "
            "it); only commits of the branch live is on can be rolled back",
        )
    parents = git.parents(live, sha)
    if not parents:
        raise PatchgateError(
            "PREFLIGHT",
            f"commit {sha[:12]} is the first commit of {branch}: there is no earlier state to "
            "go back to; roll back a later commit",
        )
    if len(parents) > 1:
        raise PatchgateError(
            "PREFLIGHT",
            f"commit {sha[:12]} is a merge commit ({len(parents)} parents); patchgate reverts "
            "single-parent commits only — roll back the commits the merge brought in one by "
            f"one, or revert it by hand choosing the mainline (git -C {live} revert -m 1 "
            f"{sha[:12]}) and record it",
        )
    subject, body = git.subject_and_message(live, sha)
    info = trailers.CommitInfo(sha, subject, trailers.parse_trailers(body))
    reverts = info.first(trailers.REVERTS)
    if reverts is None:
        found = _REVERTS_LINE.search(body)
        reverts = found.group(1) if found else None
    original: dict[str, Any] | None = None
    if reverts is not None:
        full = git.commit_of(live, reverts)
        original = {"sha": full or reverts, "subject": None, "patch_id": None}
        if full is not None:
            original["subject"] = git.subject_and_message(live, full)[0]
            original["patch_id"] = trailers.CommitInfo(
                full, "", trailers.commit_trailers(live, full)
            ).first(trailers.PATCH_ID)
    files = info.first(trailers.FILES)
    return {
        "sha": sha,
        "parent": parents[0],
        "subject": subject,
        "patch_id": info.first(trailers.PATCH_ID),
        "rollback_id": info.first(trailers.ROLLBACK_ID),
        "trailer_files": trailers.split_files(files) if files else [],
        "patchgate": any(info.first(k) for k in trailers.MARKER_KEYS),
        "original": original,
        "revert_subject": revert_subject(subject),
    }


# --- the revert, computed without touching live -----------------------------------------------


@contextlib.contextmanager
def scratch(root: str, live: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A private index and object directory: git writes there, live's own are only read."""
    path = os.path.join(root, ROLLBACK_DIR, f"scratch-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "objects"))
    objects = git.objects_dir(live)
    env = git.git_env(
        {
            "GIT_INDEX_FILE": os.path.join(path, "index"),
            "GIT_OBJECT_DIRECTORY": os.path.join(path, "objects"),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": objects,
        }
    )
    try:
        yield path, env
    finally:
        shutil.rmtree(path, ignore_errors=True)


def conflicting_files(output: str) -> list[str]:
    """The paths git apply names in its complaints, sorted."""
    found = set()
    for line in output.splitlines():
        for pattern in _CONFLICT_LINES:
            match = pattern.match(line.strip())
            if match:
                found.add(match.group("path"))
                break
    return sorted(found)


def first_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("error:")]
    if lines:
        return lines[0]
    if conflicting_files(output):
        return "the three-way merge left conflicts"
    return first_problem(output)


def compute_revert(root: str, live: str, sha: str, head: str) -> dict[str, Any]:
    """The revert of ``sha`` on ``head``, as ``git revert --no-commit`` would make it.

    The commit's reverse (``sha`` -> its parent) is applied with ``git apply --cached --3way``
    to a private index holding ``head``: lines later commits moved or changed near the reverted
    ones merge as git revert merges them; real conflicts are named. Returns the reverted tree,
    the diff ``head`` -> that tree (the patch the workspace applies: it applies exactly), its
    files and ``--stat``; or ``conflicts`` and the first error.
    """
    with scratch(root, live) as (path, env):
        reverse = os.path.join(path, "reverse.diff")
        git.diff_tree_to_file(live, sha, f"{sha}^", reverse, DIFF_FLAGS, env)
        if os.path.getsize(reverse) == 0:
            return {"empty_commit": True, "conflicts": [], "diff": b""}
        git.read_tree(live, head, env)
        applied = git.apply_cached_3way(live, reverse, env)
        if applied.returncode != 0:
            return {
                "conflicts": conflicting_files(applied.output),
                "detail": first_error(applied.output),
                "diff": b"",
            }
        tree = git.write_tree(live, env)
        forward = os.path.join(path, "revert.diff")
        git.diff_tree_to_file(live, head, tree, forward, DIFF_FLAGS, env)
        with open(forward, "rb") as fh:
            diff = fh.read()
        return {
            "conflicts": [],
            "tree": tree,
            "diff": diff,
            "files": git.tree_diff_names(live, head, tree, env),
            "stat": git.tree_diff_stat(live, head, tree, env),
        }


# --- the plan -----------------------------------------------------------------------------------


def token_of(head: str, sha: str, diff: bytes) -> str:
    """The preview token: the first 12 hex digits of sha256(HEAD, commit, the revert's diff)."""
    digest = hashlib.sha256(f"patchgate-rollback\0{head}\0{sha}\0".encode())
    digest.update(diff)
    return digest.hexdigest()[:TOKEN_LENGTH]


def changed_by(live: str, sha: str) -> list[str]:
    return git.tree_diff_names(live, f"{sha}^", sha)


def later_commits(live: str, sha: str, head: str, files: Sequence[str]) -> list[dict[str, Any]]:
    """Commits after ``sha`` up to ``head`` touching ``files``, newest first (at most a few)."""
    if sha == head or not files:
        return []
    out = git.log_touching(live, f"{sha}..{head}", files, SHOWN_LATER + 1)
    found = []
    wanted = set(files)
    for chunk in out.split("\0")[1:]:
        first, _, rest = chunk.partition("\n")
        commit, _, subject = first.partition(" ")
        touched = sorted(p for p in (ln.strip() for ln in rest.splitlines()) if p in wanted)
        found.append({"sha": commit, "subject": subject, "files": touched})
    return found


def reverted_by(live: str, sha: str, head: str) -> list[dict[str, str]]:
    """Patchgate revert commits of ``sha`` already on the branch."""
    if sha == head:
        return []
    infos = trailers.patchgate_commits(live, f"{sha}..{head}", markers=(trailers.ROLLBACK_ID,))
    return [
        {"sha": i.sha, "rollback_id": i.first(trailers.ROLLBACK_ID) or "?"}
        for i in infos
        if audit_ledger.same_commit(i.first(trailers.REVERTS) or "", sha)
    ]


def make_plan(
    root: str, live: str, commit: dict[str, Any], head: str, branch: str
) -> tuple[dict[str, Any], bytes]:
    """The plan (plain values, for the steps) and the revert's diff bytes."""
    sha = commit["sha"]
    revert = compute_revert(root, live, sha, head)
    diff: bytes = revert.pop("diff")
    touched = changed_by(live, sha)
    plan = {
        **commit,
        **revert,
        "head": head,
        "branch": branch,
        "issue": trailers.rollback_issue(sha),
        "commit_files": touched,
        "later": later_commits(live, sha, head, touched),
        "reverted_by": reverted_by(live, sha, head),
        "token": token_of(head, sha, diff) if diff else None,
        "diff_sha256": hashlib.sha256(diff).hexdigest(),
    }
    return plan, diff


def confirm_line(sha: str, token: str) -> str:
    return f'doit rollback sha={sha} confirm={token} operator=NAME reason="…"'


def plan_lines(plan: dict[str, Any], confirmed: bool = False) -> list[str]:
    """The plan as the operator reads it (``confirmed``: as it is being executed)."""
    sha, short = plan["sha"], plan["sha"][:12]
    state = "confirmed, executing it" if confirmed else "nothing has been changed"
    lines = [
        f"rollback plan: commit {short} on {plan['branch']} (live HEAD {plan['head'][:12]}); "
        f"{state}",
        f"  commit    {sha}",
        f"  subject   {plan['subject']}",
    ]
    if plan["patch_id"]:
        files = ", ".join(plan["trailer_files"]) or "(no Patchgate-Files trailer)"
        lines.append(f"  made by   patchgate: patch {plan['patch_id']}; files {files}")
    elif plan["rollback_id"]:
        lines.append(f"  made by   patchgate: rollback {plan['rollback_id']}")
    else:
        lines.append(
            "  made by   NOT a patchgate commit (no Patchgate-Patch-Id trailer): rolling it "
            'back is allowed; the rollback event records patch id "-"'
        )
    original = plan["original"]
    if original:
        what = f' "{original["subject"]}"' if original["subject"] else ""
        lines.append(
            f"  kind      reland: {short} reverted {original['sha'][:12]}{what}; rolling it "
            "back applies that commit again"
        )
    else:
        lines.append("  kind      rollback")
    for done in plan["reverted_by"]:
        lines.append(
            f"  note      already rolled back once by {done['sha'][:12]} ({done['rollback_id']})"
        )
    lines.append(
        "  later commits touching its files (the revert may conflict with them or undo part "
        "of them):"
    )
    later = plan["later"]
    for item in later[:SHOWN_LATER]:
        touched = ", ".join(item["files"])
        lines.append(f"            {item['sha'][:12]}  {item['subject']}  ({touched})")
    if len(later) > SHOWN_LATER:
        lines.append(f"            … and more: git log {short}..{plan['head'][:12]} -- FILES")
    if not later:
        lines.append("            none")
    if plan.get("empty_commit"):
        lines.append(f"  revert    none: {short} changes no file")
        return lines
    if plan["conflicts"] or plan.get("detail"):
        conflicts = ", ".join(plan["conflicts"]) or "?"
        lines.append(f"  revert    CONFLICT in {conflicts}: {plan.get('detail')}")
        return lines
    if not plan["files"]:
        lines.append(f"  revert    none: live's HEAD already has none of the changes of {short}")
        return lines
    lines.append(
        f"  revert    as git revert {short} --no-edit; verified in workspace "
        f"issue_{plan['issue']} (the gates) before it lands:"
    )
    lines += [f"           {ln}" for ln in plan["stat"]]
    lines.append(f"  message   {plan['revert_subject']}")
    lines.append(
        f"  token     {plan['token']} (binds live HEAD {plan['head'][:12]}, commit {short} "
        "and this exact revert)"
    )
    lines.append(f"CONFIRM: {confirm_line(sha, plan['token'])}")
    return lines
