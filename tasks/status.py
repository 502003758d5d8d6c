"""doit config and doit status: read-only views of the configuration and the workspaces."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from . import cluster, config, git, propose, report, watch
from .steps import sha256_file, step
from .workspace import WORKSPACES_DIR, Workspace, is_intact


def show_config(root: str) -> dict[str, Any]:
    cfg = config.load(root)
    print(config.show(cfg))
    return {"summary": {"RESULT": "SUCCESS"}}


def task_config() -> Iterator[dict[str, Any]]:
    """Print the effective configuration and where each value came from."""
    root = os.getcwd()
    log = report.log_path(root, "config")
    yield step(
        "config",
        "show",
        show_config,
        [root],
        root=root,
        log=log,
        stage="CONFIG",
        doc="effective configuration",
        uptodate=[False],
    )


def workspace_rows(root: str) -> list[dict[str, str]]:
    """One row per workspace: its verdict and whether it is stale (patch or base moved)."""
    cfg = config.load(root)
    head = git.head(cfg.live_repo)
    rows = []
    top = os.path.join(root, WORKSPACES_DIR)
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        ws = Workspace(root, name.removeprefix("issue_"))
        if not os.path.exists(ws.meta) or ws.issue.startswith("."):
            continue  # ".finalize": finalize's scratch worktree, not an issue
        meta = ws.read_meta()
        verdict = ws.read_result().verification_status if os.path.exists(ws.result) else "-"
        why = []
        if meta.base_sha != head:
            why.append("live moved")
        if not os.path.exists(meta.patch):
            why.append("patch gone")
        elif sha256_file(meta.patch) != meta.patch_sha256:
            why.append("patch edited")
        if not is_intact(ws) and not cluster.verified_elsewhere(ws.result):  # issue 17
            why.append("worktree damaged")
        rows.append(
            {
                "issue": ws.issue,
                "verdict": verdict,
                "base": meta.base_sha[:12],
                "state": "stale: " + ", ".join(why) if why else "current",
                "patch": os.path.relpath(meta.patch, root),
            }
        )
    return rows


def show_status(root: str) -> dict[str, Any]:
    git.live_head(config.load(root).live_repo)  # a clear line when live is missing
    rows = workspace_rows(root)
    if not rows:
        print("no workspaces; start with: doit verify patch=patches/NAME.py")
    for row in rows:
        print(
            f"{row['issue']:<24} {row['verdict']:<6} base {row['base']}  {row['state']}  "
            f"({row['patch']})" + propose.status_note(root, row["issue"])  # issue 14
        )
    for line in propose.proposals_without_workspace(root, {r["issue"] for r in rows}):
        print(line)
    for line in watch.status_lines(root):  # issue 15: open rollback proposals
        print(line)
    return {"summary": {"RESULT": "SUCCESS", "WORKSPACES": str(len(rows))}}


def task_status() -> Iterator[dict[str, Any]]:
    """List every workspace: its verdict, its base, and whether it is stale."""
    root = os.getcwd()
    log = report.log_path(root, "status")
    yield step(
        "status",
        "show",
        show_status,
        [root],
        root=root,
        log=log,
        stage="STATUS",
        doc="workspaces and their verdicts",
        uptodate=[False],
    )
