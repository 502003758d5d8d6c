"""doit promote issue=ID: land what was verified on live — commit, push, archive, record, audit.

The chain of one issue shares the reporter group ``issue_ID`` with its verify chain, so a
promotion ends with one summary block:

    verify:ID-…           doit re-verifies first if the patch, the config or the base changed
    promote:ID-preflight  the verdict, live's branch, nothing stale, the paths clean and real
    promote:ID-land       journaled copy of the verified files into live, live gates, commit
    promote:ID-push       push to the remote: PUSH: OK | FAIL | SKIPPED
    promote:ID            patched_success.zip, patch to successful/, provenance, cleanup, audit

Before any of that, the hidden task ``_promote`` takes the lock, recovers an interrupted
promotion, fetches the remote and fast-forwards live when it is only behind; ``task_promote`` is
created after it (``doit.create_after``), so the verify chain is planned against the HEAD the
commit will land on. Loading (``doit list``, ``help``) does none of it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from . import (
    archive,
    audit,
    cluster,
    config,
    faults,
    filing,
    git,
    jail,
    landing,
    live_changed,
    lock,
    post_audit,
    prepare,
    proposal,
    provenance,
    redact,
    report,
    scope,
    seal,
    trailers,
    verify,
)
from .errors import PatchgateError
from .issue import check_issue
from .landing import (
    LandingContext,
    landed_summary,
    record_apply,
    remove_workspace,
    run_live_gates,
)
from .live import check_clean, check_writable, current_branch, landed_record, sync_live
from .steps import STATE_DIR, failed_creator, now, read_json, write_json
from .workspace import Workspace


def task__promote() -> dict[str, Any]:
    """(internal) What a promotion does before its tasks are planned (see ``prepare``)."""
    return prepare.setup_task("promote", prepare_promotion, [os.getcwd()])


@prepare.after("promote")
def task_promote() -> Iterator[dict[str, Any]]:
    """Land a verified workspace on live: commit, push, archive, record, audit.

    issue=ID        the workspace to land; re-verified first if the patch, config or base changed
    message="…"     commit subject (default: meta.json "message", else commit_message)
    operator=NAME keep=1 require_push=1 live_changed=… skip_up_to_date=1 fast_forward=0
    """
    # Created after _promote ran (doit list and help: at once, and then it only describes):
    # the lock is held and live fetched, so the verify chain is planned against the HEAD the
    # commit will land on.
    root = os.getcwd()
    yield from promote_tasks(root, prepare.outcome(root, "promote"))


TRIGGER = "doit promote"


# --- paths ------------------------------------------------------------------------------------


def state_dir(root: str, issue: str) -> str:
    return os.path.join(root, STATE_DIR, "promote", issue)


def promoted_path(root: str, issue: str) -> str:
    return os.path.join(root, STATE_DIR, "promoted", f"{issue}.json")


# --- the steps of promote ---------------------------------------------------------------------


def preflight(ws_dir: str, ctx: LandingContext, log: str) -> None:
    """Action of promote:ID-preflight: only a passed, current verification goes on."""
    ws = Workspace.at(ws_dir)
    issue, live = ctx.issue, ctx.live
    lock.acquire(ctx.root, issue, TRIGGER)
    landing.announce(ctx, log)
    result = seal.read_sealed(ws.root, ws.result, issue)  # issue 12: only what verify wrote
    if result.verification_status != "pass":
        raise PatchgateError(
            "PROMOTE",
            f"the verification of issue {issue} failed ({result.stage}: "
            f"{result.reason}); a failed verification is never promoted — fix the patch "
            "and verify again",
        )
    if not result.changes or not result.tree:
        raise PatchgateError(
            "PROMOTE",
            f"the verified patch of issue {issue} changes nothing; there is nothing to promote",
        )
    seal.check_result(ws, result)  # ... and the tree its step records lead to
    failing = sorted(g for g, r in result.gates.items() if r.get("verdict") == "fail")
    if failing:
        redact.tell(
            log, f"promote: warning: verified with failing gates allowed: {', '.join(failing)}"
        )
    current_branch(live, ctx.branch)
    head = git.live_head(live)
    if result.base_sha != head:
        raise PatchgateError(
            "PROMOTE",
            f"the verification of issue {issue} is stale: it was verified on "
            f"{result.base_sha[:12]}, live is at {head[:12]} (live moved after this run "
            f"planned it); run doit promote issue={issue} again: it re-verifies on the new base",
        )
    cluster.recheck(ws.dir, log)  # issue 17: a tree verified elsewhere is recomputed here
    paths = [c["path"] for c in result.changes]
    protected = scope.check_protected_landing(ctx.root, live, paths)  # issue 12
    check_clean(live, paths, f"promoting issue {issue}")
    check_writable(live, result.changes)
    write_json(
        os.path.join(ctx.state, "preflight.json"),
        {
            "issue": issue,
            "head": head,
            "tree": result.tree,
            "changes": result.changes,
            "files": sorted(paths),
            "patch_id": result.patch_id,
            "patch": ws.read_meta().patch,
            "verification": result.verification_status,
            "gates": {g: r.get("verdict", "") for g, r in result.gates.items()},
            "protected": protected,
        },
    )
    redact.log(log, f"promote: preflight passed: {len(paths)} path(s) onto {head[:12]}")


def commit_message(ws: Workspace, ctx: LandingContext, pre: dict[str, Any]) -> str:
    issue = ctx.issue
    meta_message = ws.read_meta().message if os.path.exists(ws.meta) else None
    subject = ctx.message or meta_message or str(ctx.commit_message).replace("{issue}", issue)
    pairs = [
        (trailers.PATCH_ID, pre["patch_id"]),
        (trailers.ISSUE, issue),
        (trailers.BASE, pre["head"]),
        (trailers.TRIGGER, TRIGGER),
        (trailers.VERIFICATION, trailers.verification_value(pre["verification"], pre["gates"])),
        (trailers.FILES, trailers.files_value(pre["files"])),
        (trailers.OPERATOR, ctx.operator or ""),
        (trailers.CO_AUTHORED_BY, ctx.co_authored_by or ""),
        # issue 14: Proposed-by, Confidence, Triggered-by when a model wrote the verified patch
        *proposal.trailer_pairs(ws.dir),
    ]
    body = f"Landed by patchgate: the tree {pre['tree'][:12]} verified in workspace issue_{issue}."
    return trailers.format_message(subject, body, pairs)


def land(ws_dir: str, ctx: LandingContext, log: str) -> None:
    """Action of promote:ID-land: copy, live gates, commit — all or nothing, journaled."""
    ws = Workspace.at(ws_dir)
    issue, live = ctx.issue, ctx.live
    pre = read_json(os.path.join(ctx.state, "preflight.json"))
    branch = current_branch(live, ctx.branch)
    head = git.live_head(live)
    if head != pre["head"]:
        raise PatchgateError(
            "PROMOTE",
            f"live moved during the promotion ({pre['head'][:12]} -> {head[:12]}); "
            f"run doit promote issue={issue} again",
        )
    record = {
        "issue": issue,
        "patch_id": pre["patch_id"],
        "patch": pre["patch"],
        "files": pre["files"],
        "old_head": head,
        "tree": pre["tree"],
        "branch": branch,
    }
    hook = None
    if ctx.live_gates:

        def hook() -> None:
            run_live_gates(ws, ctx, pre["changes"], log)

    commit = landing.land_changes(
        root=ctx.root,
        live=live,
        branch=branch,
        head=head,
        changes=pre["changes"],
        tree=pre["tree"],
        message=commit_message(ws, ctx, pre),
        kind="promote",
        label=issue,
        record_path=os.path.join(ctx.state, "land.json"),
        record=record,
        log=log,
        before_commit=hook,
    )
    redact.tell(
        log, f"promote: committed {commit} on {branch} (tree {pre['tree'][:12]}, as verified)"
    )


def success_archive(live: str, commit: str, dest: str) -> None:
    """patched_success.zip: every file of the promotion commit (tracked files only)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    archive.commit_zip(live, commit, dest)


def copy_patch(root: str, patch: str | None, folder: str) -> str | None:
    """A copy of the patch file in patches/<folder>/ (a failed promotion keeps its patch)."""
    if not patch or not os.path.isfile(patch):
        return None
    dest_dir = os.path.join(root, "patches", folder)
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, os.path.basename(patch))
    shutil.copy2(patch, dest)
    return dest


def move_patch(root: str, state: str, commit: str, patch: str | None) -> str | None:
    """Move the patch to patches/successful/ (a timestamp is added if the name is taken), once.

    Where it goes is written first (``filed.json``, with the landed commit): a rerun after a
    kill moves it there or finds it there, and never picks a second name.
    """
    filed_path = os.path.join(state, "filed.json")
    filed = read_json(filed_path) if os.path.exists(filed_path) else {}
    if filed.get("commit") != commit:
        if not patch or not os.path.isfile(patch):
            return None
        dest_dir = os.path.join(root, "patches", "successful")
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, os.path.basename(patch))
        if os.path.exists(dest):
            stem, ext = os.path.splitext(os.path.basename(patch))
            dest = os.path.join(dest_dir, f"{stem}.{datetime.now(UTC):%Y%m%dT%H%M%SZ}{ext}")
        filed = {"commit": commit, "dest": dest}
        write_json(filed_path, filed)
    dest = filed["dest"]
    if patch and os.path.isfile(patch) and not os.path.exists(dest):
        os.replace(patch, dest)
    return dest if os.path.exists(dest) else None


def finish(ws_dir: str, ctx: LandingContext, log: str) -> dict[str, Any]:
    """promote:ID: archive, patch to successful/, provenance, cleanup, the promoted record."""
    ws = Workspace.at(ws_dir)
    root, issue, live = ctx.root, ctx.issue, ctx.live
    landed = read_json(os.path.join(ctx.state, "land.json"))
    pushed = read_json(os.path.join(ctx.state, "push.json"))
    commit = landed["commit"]
    out_dir = os.path.join(root, "patches", "successful", issue)
    started = time.monotonic()
    success_archive(live, commit, os.path.join(out_dir, "patched_success.zip"))
    faults.point("promote-archived")
    archive_seconds = time.monotonic() - started
    if os.path.exists(ws.archive):
        shutil.copy2(ws.archive, os.path.join(out_dir, "patched.zip"))
    moved = move_patch(root, ctx.state, commit, landed.get("patch"))
    faults.point("promote-filed")
    record_apply(root, ctx, landed, pushed, TRIGGER, issue)
    faults.point("promote-recorded")
    live_note = live_changed.applied_note(ws)  # what live_changed did, read before the cleanup
    started = time.monotonic()
    if not ctx.keep:
        remove_workspace(live, ws, log)
    cleanup_seconds = time.monotonic() - started
    summary = landed_summary(ctx, landed, pushed)
    if live_note:
        summary["NOTE"] = f"{summary['NOTE']}; {live_note}" if "NOTE" in summary else live_note
    summary.update(scope.protected_summary(ctx.state))  # issue 12: PROTECTED: ...
    write_json(
        promoted_path(root, issue),
        {
            "issue": issue,
            "commit": commit,
            "push": pushed["push"],
            "files": landed["files"],
            "patch_id": landed["patch_id"],
            "promoted_at": now(),
            "summary": summary,
            "archive": os.path.relpath(os.path.join(out_dir, "patched_success.zip"), root),
            "patch": os.path.relpath(moved, root) if moved else None,
            "timings": {
                "archive_seconds": round(archive_seconds, 3),
                "cleanup_seconds": round(cleanup_seconds, 3),
            },
        },
    )
    redact.log(
        log,
        f"promote: done: {commit} (push {pushed['push']}); archive "
        f"{os.path.relpath(out_dir, root)}/patched_success.zip",
    )
    # record: where the audit after the landing keeps a failure (landing.finish_landing)
    return {"summary": summary, "record": promoted_path(root, issue)}


def promote_failed(ws_dir: str, stage: str, message: str) -> None:
    """Failure hook of every promote step: a promote_fail event, a copy in unsuccessful/."""
    ws = Workspace.at(ws_dir)
    try:
        result = read_json(ws.result) if os.path.exists(ws.result) else {}
        patch = ws.read_meta().patch if os.path.exists(ws.meta) else None
        copy_patch(ws.root, patch, "unsuccessful")
        event: dict[str, Any] = {
            "event": provenance.EventKind.PROMOTE_FAIL,
            "patch_id": result.get("patch_id") or provenance.NO_PATCH,
            "issue": ws.issue,
            "stage": stage,
            "reason": redact.redact(message) or "failed",
        }
        landed = os.path.join(state_dir(ws.root, ws.issue), "land.json")
        if os.path.exists(landed):
            event["commit_hash"] = read_json(landed)["commit"]
        provenance.append_event(ws.root, event)
    except (OSError, PatchgateError, ValueError) as exc:  # never hide the failure itself
        print(f"promote: could not record the failure: {exc}", file=sys.stderr)


def report_promoted(
    ws_dir: str, record_path: str, log: str, checks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Action for an issue promoted before: say so, change nothing.

    If the audit after that promotion failed, it runs again (``checks``: the audit settings):
    SUCCESS only once it passes.
    """
    record = read_json(record_path)
    line = f"issue {record['issue']} was already promoted in {record['commit']}"
    redact.tell(log, line)
    if checks is not None:  # the audit after it failed: audit again (issue 11)
        root, live = checks["root"], checks["live"]
        command = partial(
            audit.run_audit_command,
            root,
            list(checks["audit_command"] or []),
            live,
            log,
            float(checks["gate_timeout"]),
        )
        where = (root, live, checks["branch"])
        again = post_audit.recheck(
            record_path, command, checks["audit_after_promote"], where, log, redact.redact
        )
        line += f"; {again}" if again else ""
    return {
        "summary": {
            "RESULT": "SUCCESS",
            "FILES": ", ".join(record["files"]),
            "COMMIT": record["commit"],
            "PUSH": record["push"],
            "NOTE": line,
        }
    }


# --- the task creator's work ------------------------------------------------------------------


PROMOTE = landing.LandingKind(
    name="promote",
    land=land,
    finish=finish,
    land_stage="PROMOTE",
    finish_step="{issue}",
    finish_doc="archive, patch to successful/, provenance, cleanup, audit",
    on_failure=promote_failed,
    summary_file=lambda ctx: promoted_path(ctx.root, ctx.issue),
)


def audit_checks(cfg: config.Config) -> dict[str, Any]:
    """What post_audit.recheck needs when a rerun audits a landed promotion again."""
    return {
        "root": cfg.root,
        "live": cfg.live_repo,
        "branch": cfg["branch"],
        "audit_command": cfg["audit_command"],
        "audit_after_promote": bool(cfg["audit_after_promote"]),
        "gate_timeout": cfg["gate_timeout"],
    }


def requested_issue(root: str) -> tuple[config.Config, str]:
    """The configuration and the issue this promotion names (issue=, or patch= as verify)."""
    cfg = config.load(root)
    issue = config.variable("issue")
    if issue is None and config.variable("patch") is not None:
        issue = filing.issue_of(root, str(config.variable("patch")))  # as verify does
    if issue is None:
        raise PatchgateError(
            "PREFLIGHT",
            "promote needs issue=ID; give the workspace patches/workspaces/issue_ID to land "
            "(or patch=PATH: verify and land that patch)",
        )
    check_issue(issue)
    return cfg, issue


def prepare_promotion(root: str) -> dict[str, Any]:
    """Action of _promote, before promote's tasks are planned: the promotion lock (held to the
    end of the run), recovery of an interrupted landing, live's branch; unless the commit
    landed already, the workspace, fetching and fast-forwarding live, the jail probe."""
    cfg, issue = requested_issue(root)
    if os.path.exists(promoted_path(root, issue)):
        return {"notes": []}
    log = report.log_path(root, f"issue_{issue}")
    notes: list[str] = []
    warning = None
    try:
        branch, notes = landing.begin(cfg, issue, TRIGGER)
        ctx = landing.context(
            cfg, "promote", issue, branch, state_dir(root, issue), f"doit promote issue={issue}"
        )
        if landed_record(ctx.land_file, ctx.live) is None:
            if not os.path.exists(Workspace(root, issue).meta) and config.variable("patch") is None:
                raise PatchgateError(
                    "PREFLIGHT",
                    f"no workspace for issue {issue}; run doit "
                    f"verify patch=PATH issue={issue} first",
                )
            notes += sync_live(cfg, branch, log)
            warning = jail.preflight(cfg["jail"])
    except PatchgateError:
        for note in notes:
            redact.tell(log, f"promote: {note}")
        raise
    os.makedirs(ctx.state, exist_ok=True)
    return {"branch": branch, "notes": notes, "warning": warning}


def promote_tasks(root: str, prepared: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Promote's tasks, from what _promote prepared (None: it did not run, doit list/help)."""
    log = report.log_path(root, "promote")
    if prepared is None:  # doit list, or help: describe, touch nothing
        yield landing.placeholder("promote", root, log, "preflight", "promote issue=ID")
        return
    try:
        cfg, issue = requested_issue(root)
    except PatchgateError as err:
        yield failed_creator("promote", root, log, err)
        return
    group = f"issue_{issue}"
    log = report.log_path(root, group)
    ws = Workspace(root, issue)
    if os.path.exists(promoted_path(root, issue)):
        yield redact.step(
            group,
            issue,
            report_promoted,
            [ws.dir, promoted_path(root, issue), log, audit_checks(cfg)],
            root=root,
            log=log,
            uptodate=[False],
            stage="PROMOTE",
            doc="already promoted: say so",
        )
        return
    try:
        refused = prepare.error_of(prepared)
        if refused is not None:
            raise refused
        ctx = landing.context(
            cfg,
            "promote",
            issue,
            prepared["branch"],
            state_dir(root, issue),
            f"doit promote issue={issue}",
        )
        landed = landed_record(ctx.land_file, ctx.live)
        planned: list[dict[str, Any]] = []
        names: set[str] = set()
        if landed is None:
            # The verify chain, declared here (doit verify's creator runs only for doit verify):
            # planned on live's HEAD as _promote left it.
            head = git.live_head(ctx.live)
            planned = [
                {**t, "basename": "verify"}
                for t in verify.requested_chains(cfg, head, prepared["warning"])
            ]
            # doit verify patch=P promote issue=P: verify's creator may have declared it
            names = set(verify.declared(issue))
            if not names & {f"{issue}-archive", f"{issue}-preflight"}:
                raise PatchgateError(
                    "PREFLIGHT",
                    f"the verification of issue {issue} could "
                    f"not be planned; run doit verify issue={issue}",
                )
    except PatchgateError as err:
        yield redact.step(
            group,
            f"{issue}-preflight",
            landing.refuse,
            [ws.dir, err.stage, redact.redact(err.message)],
            root=root,
            log=log,
            uptodate=[False],
            stage=err.stage,
            doc="refuse",
            on_failure=promote_failed if os.path.exists(ws.meta) else None,
        )
        return
    yield from planned
    notes = prepared["notes"]
    ctx = replace(ctx, notes=tuple(notes))
    land_deps: list[str] = []
    pre_file = os.path.join(ctx.state, "preflight.json")
    if landed is None:
        verified = f"{issue}-archive" if f"{issue}-archive" in names else f"{issue}-preflight"
        yield redact.step(
            group,
            f"{issue}-preflight",
            preflight,
            [ws.dir, ctx, log],
            root=root,
            log=log,
            uptodate=[False],
            stage="PROMOTE",
            doc="a passed, current verification; live ready for it",
            file_dep=[ws.result] if verified.endswith("-archive") else [],
            task_dep=[f"verify:{verified}"],
            targets=[pre_file],
            on_failure=promote_failed,
        )
        land_deps = [f"promote:{issue}-preflight"]
        ctx = replace(ctx, notes=())  # preflight showed them
    yield from landing.chain(
        PROMOTE,
        ctx,
        ws,
        group=group,
        log=log,
        resume=landed is not None,
        land_deps=land_deps,
        land_file_dep=[pre_file],
    )
