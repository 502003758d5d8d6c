"""The workspace of one issue: a persistent git worktree of live plus the state of its steps."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from . import faults, git, lock, report
from .errors import PatchgateError
from .schema import validate
from .steps import read_json, write_json

WORKSPACES_DIR = os.path.join("patches", "workspaces")
META_SCHEMA = "workspace-meta.schema.json"
RESULT_SCHEMA = "verification-result.schema.json"


@dataclass(frozen=True)
class Meta:
    """meta.json, the patch manifest of one workspace (schemas/workspace-meta.schema.json):
    written by the workspace step (ensure) or for a cluster worker's verdict, read by the steps
    after it. ``from_json`` checks the schema (a bad one: WORKSPACE, naming the key)."""

    issue: str
    live_repo: str
    base_sha: str
    base_tree: str
    attempt: int
    patch: str
    patch_sha256: str
    created: str
    message: str | None = None  # verify … message=M, kept for a later promote

    @classmethod
    def from_json(cls, data: Any) -> Meta:
        try:
            validate(data, META_SCHEMA, "WORKSPACE", "meta.json")
        except PatchgateError as err:
            raise PatchgateError(
                err.stage, f"{err.message}; verify the patch again to rewrite it"
            ) from None
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.message is None:
            del data["message"]
        return data


@dataclass(frozen=True)
class Result:
    """result.json, the verification result of one issue (schemas/verification-result.schema.json):
    built by verify's build_result (or for a cluster worker's verdict), written and sealed by
    record_verdict; read by promote (seal.read_sealed), rollback, status and the cluster.
    ``from_json`` checks the schema; a bad one is a ``stage`` error naming the key."""

    patch_id: str
    issue: str
    base_sha: str
    patch_sha256: str
    build_status: str  # pass | fail | not_run | excused
    test_results: list[dict[str, Any]]  # command, exit_code, duration_seconds: Atlas test-N gates
    gates: dict[str, dict[str, Any]]  # name -> verdict, reason, exit_code, duration, checked
    verification_status: str  # pass | fail
    tree: str | None
    files: list[str]
    summary: dict[str, str]
    patch: str | None = None
    stage: str | None = None
    reason: str | None = None
    changes: list[dict[str, str]] = field(default_factory=list)
    verified_by: dict[str, str] | None = None  # issue 17: the cluster worker that verified

    @classmethod
    def from_json(cls, data: Any, stage: str = "VERIFY") -> Result:
        try:
            validate(data, RESULT_SCHEMA, stage, "result.json")
        except PatchgateError as err:
            raise PatchgateError(
                err.stage, f"{err.message}; verify the patch again to rewrite it"
            ) from None
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("patch", "verified_by"):  # absent, never null (the schema says a string)
            if data[key] is None:
                del data[key]
        return data


@dataclass(frozen=True)
class Workspace:
    root: str
    issue: str

    @classmethod
    def at(cls, ws_dir: str) -> Workspace:
        ws_dir = os.path.abspath(ws_dir)
        root = os.path.dirname(os.path.dirname(os.path.dirname(ws_dir)))
        return cls(root, os.path.basename(ws_dir).removeprefix("issue_"))

    @property
    def dir(self) -> str:
        return os.path.join(self.root, WORKSPACES_DIR, f"issue_{self.issue}")

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def repo(self) -> str:
        return self.path("repo")

    @property
    def meta(self) -> str:
        return self.path("meta.json")

    @property
    def result(self) -> str:
        return self.path("result.json")

    @property
    def archive(self) -> str:
        return self.path("patched.zip")

    @property
    def index(self) -> str:
        return self.path("snapshot.index")

    def step_file(self, name: str) -> str:
        return self.path("steps", f"{name}.json")

    def gate_file(self, name: str) -> str:
        return self.path("gates", f"{name}.json")

    def read_meta(self) -> Meta:
        return Meta.from_json(read_json(self.meta))

    def read_result(self) -> Result:
        return Result.from_json(read_json(self.result))


def is_intact(ws: Workspace) -> bool:
    """The worktree exists and its .git pointer leads to a gitdir that still knows it."""
    pointer = os.path.join(ws.repo, ".git")
    if not os.path.isfile(pointer):
        return False
    with open(pointer, encoding="utf-8") as fh:
        gitdir = fh.read().removeprefix("gitdir:").strip()
    return os.path.isdir(gitdir)


def ensure(
    ws_dir: str,
    live_repo: str,
    base: str,
    patch: str,
    patch_sha256: str,
    log: str,
    message: str | None = None,
) -> None:
    """Action of the workspace step: reuse the worktree, move it to a new base, or create it.

    ``message`` (``doit verify … message=M``) is kept in meta.json for a later promote; without
    one, the message kept before stays.
    """
    ws = Workspace.at(ws_dir)
    os.makedirs(ws.dir, exist_ok=True)
    previous = None  # an earlier attempt's; one no longer readable is rewritten
    with contextlib.suppress(OSError, ValueError, PatchgateError):
        previous = ws.read_meta()
    fresh = False  # the worktree is exactly at base: git just wrote it
    if is_intact(ws):
        if previous is None or previous.base_sha != base:
            report.log(log, f"workspace: base moved to {base[:12]}; checking it out in place")
            git.restore(ws.repo, "HEAD")
            git.checkout_detached(ws.repo, base, stage="WORKSPACE")
            fresh = True
    else:
        if os.path.lexists(ws.repo):
            report.log(log, "workspace: worktree damaged; re-creating it")
            shutil.rmtree(ws.repo)
        report.log(log, f"workspace: git worktree add {ws.repo} at {base[:12]}")
        with lock.worktrees(ws.root):  # another issue's prune must not run in between
            git.prune_worktrees(live_repo, stage="WORKSPACE")
            git.add_worktree(live_repo, ws.repo, base, stage="WORKSPACE")
        faults.point("workspace-added")
        fresh = True
    if os.path.exists(ws.index):
        os.unlink(ws.index)
    base_tree = git.tree_of(ws.repo, base)
    forget_tree(ws)
    if fresh:  # apply need not reset and clean a tree git has just checked out
        mark_tree(ws, base_tree)
    meta = Meta(
        issue=ws.issue,
        live_repo=live_repo,
        base_sha=base,
        base_tree=base_tree,
        attempt=previous.attempt + 1 if previous else 1,
        patch=patch,
        patch_sha256=patch_sha256,
        created=previous.created if previous else datetime.now(UTC).isoformat(timespec="seconds"),
        message=message if message is not None or previous is None else previous.message,
    )
    write_json(ws.meta, meta.to_json(), META_SCHEMA)


@contextmanager
def attempt(ws: Workspace) -> Iterator[str]:
    """Start from the base exactly; if anything goes wrong, put the base back (pre-commit style)."""
    meta = ws.read_meta()
    base = meta.base_sha
    if known_tree(ws) != meta.base_tree:  # within one run only: see known_tree
        git.restore(ws.repo, base)
    forget_tree(ws)
    try:
        yield base
    except BaseException:
        git.restore(ws.repo, base)
        raise


def ensure_tree(ws: Workspace, tree: str) -> None:
    """Make the worktree hold exactly ``tree`` (undoing what an earlier step left behind)."""
    if known_tree(ws) == tree:
        return
    if git.snapshot(ws.repo, ws.index) != tree:
        git.restore(ws.repo, ws.read_meta().base_sha, tree)
    mark_tree(ws, tree)


# A snapshot scans the whole worktree. Within one run, the steps that can change the worktree
# forget the mark first (apply, fixing gates, unjailed gates); judging gates see it read-only.
# Across runs the mark is never trusted: a person may have edited the worktree in between.


def known_tree(ws: Workspace) -> str | None:
    try:
        with open(ws.path("worktree.tree"), encoding="utf-8") as fh:
            tree, stamp = fh.read().split()
    except (OSError, ValueError):
        return None
    return tree if stamp == report.RUN_STAMP else None


def mark_tree(ws: Workspace, tree: str) -> None:
    with open(ws.path("worktree.tree"), "w", encoding="utf-8") as fh:
        fh.write(f"{tree} {report.RUN_STAMP}\n")


def forget_tree(ws: Workspace) -> None:
    if os.path.exists(ws.path("worktree.tree")):
        os.unlink(ws.path("worktree.tree"))


def require(ws: Workspace) -> None:
    if not os.path.exists(ws.meta):
        raise PatchgateError(
            "PREFLIGHT", f"no workspace for issue {ws.issue}; run doit verify patch=... first"
        )
