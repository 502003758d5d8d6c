"""doit finalize message="…": gate live's uncommitted changes, then commit and push them (AM -f).

Gates never run in live itself. Live's changed files (``git status``: modified, added, deleted,
untracked; ignored files are not changes) are hashed into a tree on top of HEAD; a temporary
worktree (``patches/workspaces/issue_.finalize``, a name no issue can have) is put at exactly
that tree, and the configured gates run there, jailed, through the same ``run_gate`` as verify.
What lands is the tree the gates passed: a fixer's edits (ruff format) are written back to live.
Landing, pushing and the lock are promote's; the journal and crash recovery ``patchgate.journal``'s.

    finalize:gates   hash live's changes, gate them in the temporary worktree
    finalize:land    live unchanged since? then the journaled copy + commit (Trigger: finalize)
    finalize:push    PUSH: OK | FAIL | SKIPPED
    finalize         provenance apply event, temporary worktree removed, audit command
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from . import config, git, jail, landing, prepare, provenance, redact, report, trailers
from .errors import PatchgateError
from .gates import run_gate
from .landing import LandingContext, hash_tree, landed_summary, record_apply, remove_workspace
from .live import current_branch, landed_record, sync_live
from .steps import failed_creator, now, read_json, write_json
from .workspace import Workspace, ensure


def task__finalize() -> dict[str, Any]:
    """(internal) What finalize does before its tasks are planned (see ``prepare``)."""
    return prepare.setup_task("finalize", prepare_finalize, [os.getcwd()])


@prepare.after("finalize")
def task_finalize() -> Iterator[dict[str, Any]]:
    """Finalize live (AM -f): gate live's uncommitted changes, then commit and push them.

    message="…"     commit subject (required)
    operator=NAME require_push=1 skip_up_to_date=1 fast_forward=0   (see `doit config`)
    """
    root = os.getcwd()  # created after _finalize ran: the lock is held, live fetched
    yield from finalize_tasks(root, prepare.outcome(root, "finalize"))


LABEL = ".finalize"  # the temporary worktree's issue name: check_issue refuses it for issues
TRIGGER = "finalize"
GROUP = "finalize"


def state_dir(root: str) -> str:
    return os.path.join(root, "patches", ".state", "finalize")


def changed_paths(live: str) -> list[str]:
    """Paths with uncommitted changes in live (staged, unstaged, untracked; not ignored)."""
    out = git.status_z(live, "--untracked-files=all", "--no-renames")
    paths = sorted({e[3:] for e in out.split("\0") if len(e) > 3})
    nested = [p for p in paths if p.endswith("/")]
    if nested:
        raise PatchgateError(
            "FINALIZE",
            f"{nested[0]} is a nested repository; commit it on its own or move it "
            "away, then finalize again",
        )
    return paths


def gate_live(ws_dir: str, ctx: LandingContext, log: str) -> None:
    """Action of finalize:gates: live's changes as a tree, gated in a temporary worktree."""
    ws = Workspace.at(ws_dir)
    root, live = ctx.root, ctx.live
    for note in ctx.notes:
        redact.tell(log, f"finalize: {note}")
    current_branch(live, ctx.branch)
    head = git.live_head(live)
    paths = changed_paths(live)
    head_tree = git.tree_of(live, head)
    tree = hash_tree(root, live, head, paths) if paths else head_tree
    if tree == head_tree:
        raise PatchgateError("FINALIZE", "live has no uncommitted changes; nothing to finalize")
    digest = hashlib.sha256(tree.encode()).hexdigest()
    ensure(ws.dir, live, head, "(finalize: live's uncommitted changes)", digest, log)
    git.restore(ws.repo, head, tree)
    changes = [c.as_dict() for c in git.diff_trees(live, head_tree, tree)]
    files = sorted(c["path"] for c in changes)
    redact.log(log, f"finalize: {len(changes)} changed path(s) in live: {', '.join(files)}")
    # Shaped like apply.json, so run_gate treats it as any patch's result.
    write_json(
        ws.step_file("apply"),
        {"method": "finalize", "files": files, "tree": tree, "changes": changes},
    )
    source, verdicts = ws.step_file("apply"), {}
    for gate in ctx.gates:
        run_gate(ws.dir, gate, source, ctx.settings, log)
        verdicts[gate.name] = read_json(ws.gate_file(gate.name))["verdict"]
        if gate.fixes:
            source = ws.gate_file(gate.name)
    final = read_json(source)
    write_json(
        os.path.join(ctx.state, "gates.json"),
        {
            "head": head,
            "live_paths": paths,
            "live_tree": tree,
            "tree": final["tree"],
            "changes": final["changes"],
            "files": sorted(c["path"] for c in final["changes"]),
            "gates": verdicts,
        },
    )
    redact.log(log, f"finalize: gates passed on tree {final['tree'][:12]}")


def message_of(ctx: LandingContext, gated: dict[str, Any], patch_id: str) -> str:
    pairs = [
        (trailers.PATCH_ID, patch_id),
        (trailers.BASE, gated["head"]),
        (trailers.TRIGGER, TRIGGER),
        (trailers.VERIFICATION, trailers.verification_value("pass", gated["gates"])),
        (trailers.FILES, trailers.files_value(gated["files"])),
        (trailers.OPERATOR, ctx.operator or ""),
        (trailers.CO_AUTHORED_BY, ctx.co_authored_by or ""),
    ]
    body = f"Finalized by patchgate: live's uncommitted changes, gated as {gated['tree'][:12]}."
    return trailers.format_message(ctx.message or "", body, pairs)


def land_live(ws_dir: str, ctx: LandingContext, log: str) -> None:
    """Action of finalize:land: live still holds what was gated; then copy (fixes) + commit."""
    root, live = ctx.root, ctx.live
    gated = read_json(os.path.join(ctx.state, "gates.json"))
    branch = current_branch(live, ctx.branch)
    head = git.live_head(live)
    paths = changed_paths(live)
    tree = hash_tree(root, live, head, paths) if paths else git.tree_of(live, head)
    if head != gated["head"] or tree != gated["live_tree"]:
        raise PatchgateError(
            "FINALIZE",
            "live changed while its gates ran; run doit finalize again to gate what is there now",
        )
    patch_id = f"finalize@{gated['tree'][:12]}"
    record = {
        "issue": LABEL,
        "patch_id": patch_id,
        "files": gated["files"],
        "old_head": head,
        "tree": gated["tree"],
        "branch": branch,
    }
    commit = landing.land_changes(
        root=root,
        live=live,
        branch=branch,
        head=head,
        changes=gated["changes"],
        tree=gated["tree"],
        message=message_of(ctx, gated, patch_id),
        kind="finalize",
        label="live",
        record_path=os.path.join(ctx.state, "land.json"),
        record=record,
        log=log,
    )
    redact.tell(log, f"finalize: committed {commit} on {branch}")


def finish_live(ws_dir: str, ctx: LandingContext, log: str) -> dict[str, Any]:
    """finalize:finish: provenance, temporary worktree removed, the summary."""
    ws = Workspace.at(ws_dir)
    root = ctx.root
    landed = read_json(os.path.join(ctx.state, "land.json"))
    pushed = read_json(os.path.join(ctx.state, "push.json"))
    commit = landed["commit"]
    record_apply(root, ctx, landed, pushed, TRIGGER)
    remove_workspace(ctx.live, ws, log)
    summary = landed_summary(ctx, landed, pushed)
    write_json(
        os.path.join(ctx.state, "result.json"),
        {
            "commit": commit,
            "push": pushed["push"],
            "files": landed["files"],
            "finished_at": now(),
            "summary": summary,
        },
    )
    return {"summary": summary}


def finalize_failed(ws_dir: str, stage: str, message: str) -> None:
    ws = Workspace.at(ws_dir)
    try:
        provenance.append_event(
            ws.root,
            {
                "event": provenance.EventKind.PROMOTE_FAIL,
                "patch_id": "finalize",
                "stage": stage,
                "reason": redact.redact(message) or "failed",
                "trigger": TRIGGER,
            },
        )
    except (OSError, PatchgateError, ValueError) as exc:
        print(f"finalize: could not record the failure: {exc}")


def unfinished(state: str, live: str) -> dict[str, Any] | None:
    """A finalize commit that was not pushed and recorded yet (crash, or require_push)."""
    landed = landed_record(os.path.join(state, "land.json"), live)
    result = os.path.join(state, "result.json")
    if landed and os.path.exists(result) and read_json(result)["commit"] == landed["commit"]:
        return None  # finished: the next finalize starts afresh
    return landed


FINALIZE = landing.LandingKind(
    name="finalize",
    land=land_live,
    finish=finish_live,
    land_stage="FINALIZE",
    land_step="land",
    push_step="push",
    finish_step="finish",
    land_doc="commit what was gated (journaled)",
    finish_doc="provenance, cleanup, audit",
    on_failure=finalize_failed,
    fail_finish=True,
    summary_file=lambda ctx: os.path.join(ctx.state, "result.json"),
)


def prepare_finalize(root: str) -> dict[str, Any]:
    """Action of _finalize, before finalize's tasks are planned: the promotion lock (held to
    the end of the run), recovery, live's branch; unless a finalize commit landed already,
    fetching and fast-forwarding live and the jail probe."""
    cfg = config.load(root)
    branch, notes = landing.begin(cfg, "-", "doit finalize")
    ctx = landing.context(cfg, "finalize", LABEL, branch, state_dir(root), "doit finalize")
    if unfinished(ctx.state, ctx.live) is None:
        if not ctx.message:
            raise PatchgateError(
                "PREFLIGHT",
                'finalize needs message="…"; give the subject of the commit it makes',
            )
        notes += sync_live(cfg, branch, report.log_path(root, GROUP))
        jail.preflight(cfg["jail"])
    os.makedirs(ctx.state, exist_ok=True)
    return {"branch": branch, "notes": notes}


def finalize_tasks(root: str, prepared: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Finalize's tasks, from what _finalize prepared (None: it did not run, doit list/help)."""
    log = report.log_path(root, GROUP)
    if prepared is None:  # doit list, or help: describe, touch nothing
        yield landing.placeholder(GROUP, root, log, "preflight", 'finalize message="…"')
        return
    ws = Workspace(root, LABEL)
    try:
        refused = prepare.error_of(prepared)
        if refused is not None:
            raise refused
        cfg = config.load(root)
        branch, notes = prepared["branch"], list(prepared["notes"])
        ctx = landing.context(cfg, "finalize", LABEL, branch, state_dir(root), "doit finalize")
        landed = unfinished(ctx.state, ctx.live)
    except PatchgateError as err:
        yield failed_creator(
            GROUP, root, log, PatchgateError(err.stage, redact.redact(err.message))
        )
        return
    ctx = replace(ctx, notes=tuple(notes))
    gates_file = os.path.join(ctx.state, "gates.json")
    if landed is None:
        yield redact.step(
            GROUP,
            "gates",
            gate_live,
            [ws.dir, ctx, log],
            root=root,
            log=log,
            uptodate=[False],
            on_failure=finalize_failed,
            stage="GATES",
            doc="gate live's uncommitted changes in a temporary worktree",
            targets=[gates_file],
        )
        ctx = replace(ctx, notes=())  # the gates step showed them
    yield from landing.chain(
        FINALIZE,
        ctx,
        ws,
        group=GROUP,
        log=log,
        resume=landed is not None,
        land_deps=["finalize:gates"] if landed is None else [],
        land_file_dep=[gates_file],
    )
