"""doit rollback sha=S: plan the revert of a commit; with the operator's confirmation, land it.

``doit rollback sha=S`` only plans, and writes nothing to live: the commit (subject, patch id
and files from its trailers, or "not a patchgate commit"), the later commits that touch the same
files, the exact revert and its ``--stat``, and a token bound to live's HEAD, the commit and that
revert. The revert is computed as ``git revert`` would (a three-way apply of the commit's
reverse onto HEAD) in a private index and object directory under ``patches/.state/rollback/``.

``doit rollback sha=S confirm=TOKEN operator=NAME reason="…"`` executes it, as one chain in the
reporter group ``issue_rollback-S12`` (S12: the commit's first 12 hex digits):

    _rollback (its setup task)      lock, recovery, the plan again, the token, clean paths, fetch
    rollback:rollback-S12-plan      the plan and who confirmed it
    rollback:rollback-S12-…         verify's own chain on the revert (a diff HEAD -> reverted
                                    tree): workspace, apply, scope, gates, result, archive
    rollback:rollback-S12-land      journaled landing (promote's), the revert commit
    rollback:rollback-S12-push      PUSH: OK | FAIL | SKIPPED
    rollback:rollback-S12-finish    the rollback event, workspace removed, audit_command

State: ``patches/.state/rollback/rollback-S12/state.json`` (the confirmed plan, its rollback id),
``land.json`` and ``push.json`` beside it; ``rollback-S12.diff`` is the revert fed to the chain.
A finished rollback moves its record to ``done/<rollback id>.json``. An interrupted rollback
resumes with the same command: if its revert commit landed (HEAD moved, so the token no longer
matches a fresh plan) the token is checked against the state file and it goes on at the push.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from . import (
    audit_ledger,
    config,
    doitapi,
    faults,
    git,
    jail,
    journal,
    landing,
    liveguard,
    lock,
    prepare,
    provenance,
    redact,
    report,
    trailers,
    verify,
)
from .errors import PatchgateError
from .live import (
    check_clean,
    check_writable,
    current_branch,
    landed_record,
    sync_live,
)
from .revertplan import ROLLBACK_DIR, confirm_line, inspect_commit, make_plan, plan_lines
from .steps import failed_creator, now, read_json, step, write_json
from .workspace import Workspace


def task__rollback() -> dict[str, Any]:
    """(internal) What a rollback does before its tasks are planned (see ``prepare``)."""
    return prepare.setup_task("rollback", prepare_rollback, [os.getcwd()])


@prepare.after("rollback")
def task_rollback() -> Iterator[dict[str, Any]]:
    """Roll back a commit of live: plan its revert; land it once an operator confirms.

    sha=S                      plan only: the commit, later commits touching its files, the
                               revert (files, --stat) and the token that confirms it
    sha=S confirm=TOKEN operator=NAME reason="…"   verify the revert like a patch, land it,
                               push, record the rollback event (message="…": failure context)
    allow_gates_fail=1 require_push=1 keep=1 skip_up_to_date=1 fast_forward=0 (see doit config)
    """
    # Created after _rollback ran: the plan made, or the lock held and live fetched.
    root = os.getcwd()
    yield from rollback_tasks(root, prepare.outcome(root, "rollback"))


STAGE = "ROLLBACK"
TRIGGER = "doit rollback"
USAGE = 'doit rollback sha=S, then doit rollback sha=S confirm=TOKEN operator=NAME reason="…"'


# --- paths --------------------------------------------------------------------------------------


def state_dir(root: str, issue: str) -> str:
    return os.path.join(root, ROLLBACK_DIR, issue)


def diff_path(root: str, issue: str) -> str:
    """The revert as a patch: under patches/, so verify's apply step accepts it."""
    return os.path.join(root, ROLLBACK_DIR, f"{issue}.diff")


def done_dir(root: str) -> str:
    return os.path.join(root, ROLLBACK_DIR, "done")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


# --- the commit to roll back --------------------------------------------------------------------


def recorded_patch_id(commit: dict[str, Any]) -> str:
    """The event's patch id: the reverted commit's; for a reland, the re-applied commit's."""
    original = commit["original"]
    if commit["patch_id"]:
        return str(commit["patch_id"])
    if original and original["patch_id"]:
        return str(original["patch_id"])
    return provenance.NO_PATCH


# --- the plan (revertplan.py), checked before it lands -----------------------------------------


def check_revertible(plan: dict[str, Any]) -> None:
    """Refuse a plan that has nothing to land: an empty commit, a conflict, nothing to undo."""
    short = plan["sha"][:12]
    if plan.get("empty_commit"):
        raise PatchgateError(STAGE, f"commit {short} changes no file; there is nothing to revert")
    if plan["conflicts"] or plan.get("detail"):
        files = ", ".join(plan["conflicts"]) or "(git named no file)"
        raise PatchgateError(
            STAGE,
            f"the revert of {short} conflicts with later commits in {files} "
            f"({plan.get('detail')}); nothing was changed — revert by hand "
            f"(git revert {short}) and resolve, or roll back the later commits first",
        )
    if not plan["files"]:
        by = plan["reverted_by"]
        already = f" (rolled back by {by[0]['sha'][:12]}, {by[0]['rollback_id']})" if by else ""
        raise PatchgateError(
            STAGE,
            f"nothing to revert: live's HEAD already has none of the changes of {short}{already}; "
            "see doit history",
        )


# --- actions ------------------------------------------------------------------------------------


def show_plan(plan: dict[str, Any], notes: list[str], log: str) -> dict[str, Any]:
    """Action of the plan-only command: print the plan; the summary carries the CONFIRM line."""
    for note in notes:
        redact.tell(log, f"rollback: {note}")
    for line in plan_lines(plan):
        redact.tell(log, line)
    check_revertible(plan)
    return {
        "summary": {
            "RESULT": "SUCCESS",
            "FILES": ", ".join(plan["files"]),
            "TOKEN": plan["token"],
            "CONFIRM": confirm_line(plan["sha"], plan["token"]),
            "NOTE": "plan only: nothing was changed; run the CONFIRM line to roll back",
        }
    }


def show_unfinished(state: dict[str, Any], commit: str, log: str) -> dict[str, Any]:
    """Action of the plan-only command when this commit's rollback landed but did not finish."""
    line = (
        f"rollback {state['rollback_id']} of {state['sha'][:12]} landed {commit[:12]} but did "
        "not finish (push, rollback event); run its command again to finish it"
    )
    redact.tell(log, line)
    command = confirm_line(state["sha"], state["token"])
    redact.tell(log, f"CONFIRM: {command}")
    return {"summary": {"RESULT": "SUCCESS", "COMMIT": commit, "CONFIRM": command, "NOTE": line}}


def show_confirmed(plan: dict[str, Any], ctx: landing.LandingContext, log: str) -> None:
    """Action of rollback:ID-plan when executing: what is about to happen, and who said so."""
    landing.announce(ctx, log)
    for line in plan_lines(plan, confirmed=True)[:-1]:  # not the CONFIRM line: this is it
        redact.tell(log, line)
    rb = confirmed(ctx)
    redact.tell(
        log,
        f"rollback: {rb['rollback_id']} confirmed by {rb['operator']} (token {rb['token']}); "
        f"reason: {rb['reason']}",
    )


def verification_value(gates: dict[str, str], failing: Sequence[str]) -> str:
    value = trailers.verification_value("pass", gates)
    return f"{value}; allow_gates_fail=1" if failing else value


def revert_message(
    rb: dict[str, Any], head: str, files: Sequence[str], gates: dict[str, str]
) -> str:
    failing = sorted(g for g, v in gates.items() if v == "fail")
    pairs = [
        (trailers.ROLLBACK_ID, rb["rollback_id"]),
        (trailers.REVERTS, rb["sha"]),
        (trailers.REASON, rb["reason"]),
        (trailers.FAILURE_CONTEXT, rb["failure_context"] or ""),
        (trailers.OPERATOR, rb["operator"]),
        (trailers.TRIGGER, TRIGGER),
        (trailers.BASE, head),
        (trailers.VERIFICATION, verification_value(gates, failing)),
        (trailers.FILES, trailers.files_value(files)),
    ]
    body = f"This reverts commit {rb['sha']}."
    if rb["original"]:
        body += f"\n\nIt applies commit {rb['original']['sha']} again (a reland)."
    return trailers.format_message(rb["revert_subject"], body, pairs)


def land_revert(ws_dir: str, ctx: landing.LandingContext, log: str) -> None:
    """Action of rollback:ID-land: the verified revert onto live — journaled, all or nothing."""
    ws = Workspace.at(ws_dir)
    rb, live, root = confirmed(ctx), ctx.live, ctx.root
    lock.acquire(root, ctx.issue, TRIGGER)
    result = ws.read_result()
    if result.verification_status != "pass" or not result.tree or not result.changes:
        raise PatchgateError(
            STAGE,
            f"the verification of the revert did not pass ({result.stage}: "
            f"{result.reason}); nothing was committed",
        )
    branch = current_branch(live, ctx.branch)
    head = git.live_head(live)
    if head != rb["head"] or result.base_sha != head:
        raise PatchgateError(
            STAGE,
            f"live moved during the rollback ({rb['head'][:12]} -> {head[:12]}); nothing was "
            f"committed — plan again: doit rollback sha={rb['sha']}",
        )
    paths = sorted(c["path"] for c in result.changes)
    check_clean(live, paths, f"the revert of {rb['sha'][:12]}", STAGE, "run the same command again")
    check_writable(live, result.changes)
    gates = {g: str(r.get("verdict", "")) for g, r in result.gates.items()}
    failing = sorted(g for g, v in gates.items() if v == "fail")
    if failing:
        redact.tell(log, f"rollback: warning: landing with failing gates allowed: {failing}")
    if result.tree != rb["tree"]:
        redact.tell(
            log,
            "rollback: note: a fixing gate changed the revert; what lands is the verified "
            f"tree {result.tree[:12]}, not the planned {rb['tree'][:12]}",
        )
    record = {
        "issue": ctx.issue,
        "rollback_id": rb["rollback_id"],
        "sha": rb["sha"],
        "files": paths,
        "old_head": head,
        "tree": result.tree,
        "branch": branch,
        "gates": gates,
        "failing_gates": failing,
    }
    hook = None
    if ctx.live_gates:

        def hook() -> None:
            landing.run_live_gates(ws, ctx, result.changes, log)

    try:
        commit = landing.land_changes(
            root=root,
            live=live,
            branch=branch,
            head=head,
            changes=result.changes,
            tree=result.tree,
            message=revert_message(rb, head, paths, gates),
            kind="rollback",
            label=rb["rollback_id"],
            record_path=os.path.join(ctx.state, "land.json"),
            record=record,
            log=log,
            before_commit=hook,
        )
    except PatchgateError as err:
        raise PatchgateError(STAGE if err.stage == "PROMOTE" else err.stage, err.message) from err
    redact.tell(log, f"rollback: committed {commit} on {branch}: {rb['revert_subject']}")


def recorded(root: str, rollback_id: str) -> bool:
    return any(e.get("rollback_id") == rollback_id for e in audit_ledger.rollback_events(root))


def finish(ws_dir: str, ctx: landing.LandingContext, log: str) -> dict[str, Any]:
    """rollback:ID-finish: the rollback event, the done record, cleanup."""
    ws = Workspace.at(ws_dir)
    rb, root, live = confirmed(ctx), ctx.root, ctx.live
    landed = read_json(os.path.join(ctx.state, "land.json"))
    pushed = read_json(os.path.join(ctx.state, "push.json"))
    commit = landed["commit"]
    if not recorded(root, rb["rollback_id"]):  # a rerun after a crash right after the append
        event: dict[str, Any] = {
            "event": provenance.EventKind.ROLLBACK,
            "patch_id": rb["patch_id"],
            "rollback_id": rb["rollback_id"],
            "reason": rb["reason"],
            "operator": rb["operator"],
            "operator_confirmed": True,
            "revert_commit": commit,
            "reverted_commit": rb["sha"],
            "kind": "reland" if rb["original"] else "rollback",
            "push": pushed["push"],
            "files": landed["files"],
            "gates": landed["gates"],
            "trigger": TRIGGER,
            "base_sha": landed["old_head"],
            "token": rb["token"],
        }
        if rb["failure_context"]:
            event["failure_context"] = rb["failure_context"]
        if landed["failing_gates"]:
            event["allow_gates_fail"] = True
        provenance.append_event(root, event)
        faults.point("rollback-recorded")
    summary = {
        "RESULT": "SUCCESS",
        "FILES": ", ".join(landed["files"]),
        "COMMIT": commit,
        "PUSH": pushed["push"],
        "REVERTS": rb["sha"],
        "ROLLBACK_ID": rb["rollback_id"],
    }
    note = landing.push_note(ctx, pushed)
    if note:
        summary["NOTE"] = redact.redact(note)
    done = os.path.join(done_dir(root), f"{rb['rollback_id']}.json")
    write_json(
        done,
        {
            **rb,
            "commit": commit,
            "push": pushed["push"],
            "finished": now(),
            "summary": summary,
        },
    )
    faults.point("rollback-done")
    diff = diff_path(root, ctx.issue)
    if os.path.exists(diff):
        os.replace(diff, os.path.join(done_dir(root), f"{rb['rollback_id']}.diff"))
    shutil.rmtree(ctx.state, ignore_errors=True)
    if not ctx.keep and os.path.exists(ws.dir):
        landing.remove_workspace(live, ws, log)
    redact.log(log, f"rollback: done: {rb['rollback_id']} in {commit} (push {pushed['push']})")
    return {"summary": summary}


def confirmed(ctx: landing.LandingContext) -> dict[str, Any]:
    """The confirmed rollback a rollback's landing context carries."""
    if ctx.rollback is None:
        raise PatchgateError(
            "INTERNAL", "a rollback step without its confirmed plan; report this bug"
        )
    return ctx.rollback


ROLLBACK = landing.LandingKind(
    name="rollback",
    land=land_revert,
    finish=finish,
    land_stage=STAGE,
    land_doc="land the verified revert on live (journaled), the revert commit",
    finish_doc="the rollback event, cleanup, audit_command",
)


def report_done(ws_dir: str, record_path: str, log: str) -> dict[str, Any]:
    """Action for a rollback that finished before: say so, change nothing."""
    record = read_json(record_path)
    line = (
        f"rollback {record['rollback_id']} of {record['sha'][:12]} was already done in "
        f"{record['commit']}"
    )
    redact.tell(log, line)
    return {"summary": {**record["summary"], "NOTE": line}}


# --- the task creator's work --------------------------------------------------------------------


def executing(cfg: config.Config) -> bool:
    """Whether the command asks to execute (any of confirm=, operator=, reason= given)."""
    cli = doitapi.command_line()
    return "confirm" in cli or "reason" in cli or cfg.sources.get("operator") == "command line"


def confirmation(cfg: config.Config, sha: str) -> dict[str, str | None]:
    """confirm=, operator= and reason= from the command line, or a one-line refusal.

    The ``operator`` setting of patchgate.yaml does not count: a person confirms on the
    command line. No setting turns the confirmation off.
    """
    token = (config.variable("confirm") or "").strip().lower()
    operator = str(cfg["operator"] or "").strip()
    if cfg.sources.get("operator") != "command line":
        operator = ""
    reason = " ".join((config.variable("reason") or "").split())
    missing = [
        name
        for name, value in (
            ("confirm=TOKEN", token),
            ("operator=NAME", operator),
            ('reason="…"', reason),
        )
        if not value
    ]
    if missing:
        raise PatchgateError(
            STAGE,
            f"a rollback runs only when an operator confirms it on the command line; missing "
            f"{' '.join(missing)} (the operator setting in patchgate.yaml does not count) — plan "
            f"it with doit rollback sha={sha}, then run the CONFIRM line it prints",
        )
    context = " ".join((config.variable("message") or "").split())
    return {
        "token": token,
        "operator": operator,
        "reason": reason,
        "failure_context": context or None,
    }


def read_state(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    state: dict[str, Any] = read_json(path)
    return state


def find_done(root: str, sha: str, token: str, live: str) -> str | None:
    """The done record of a finished rollback of ``sha`` confirmed with ``token``, if its
    revert is still on the branch."""
    for path in sorted(
        glob.glob(os.path.join(done_dir(root), f"{trailers.rollback_issue(sha)}-*.json"))
    ):
        record = read_json(path)
        if (
            record.get("sha") == sha
            and record.get("token") == token
            and git.is_ancestor(live, record["commit"], "HEAD")
        ):
            return path
    return None


def rerun_command(rb: dict[str, Any]) -> str:
    return (
        f"doit rollback sha={rb['sha']} confirm={rb['token']} "
        f"operator={shlex.quote(rb['operator'])} reason={shlex.quote(rb['reason'])}"
    )


def context(
    cfg: config.Config, issue: str, branch: str, rb: dict[str, Any]
) -> landing.LandingContext:
    """The landing context of this rollback: its operator confirmed it on the command line."""
    ctx = landing.context(
        cfg, "rollback", issue, branch, state_dir(cfg.root, issue), rerun_command(rb)
    )
    return replace(ctx, operator=rb["operator"], operator_confirmed=True, rollback=rb)


def write_if_changed(path: str, data: bytes) -> None:
    """Write ``data`` atomically unless the file already holds it (doit compares content)."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        if fh.read() == data:
            return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def confirmed_state(
    plan: dict[str, Any], request: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, Any]:
    """The state of this execution; an earlier attempt of the same plan keeps its rollback id."""
    same = previous is not None and previous.get("token") == plan["token"]
    rollback_id = previous["rollback_id"] if same and previous else f"{plan['issue']}-{stamp()}"
    return {
        "rollback_id": rollback_id,
        "issue": plan["issue"],
        "sha": plan["sha"],
        "token": plan["token"],
        "head": plan["head"],
        "branch": plan["branch"],
        "tree": plan["tree"],
        "files": plan["files"],
        "subject": plan["subject"],
        "revert_subject": plan["revert_subject"],
        "original": plan["original"],
        "patch_id": recorded_patch_id(plan),
        "operator": request["operator"],
        "reason": request["reason"],
        "failure_context": request["failure_context"],
        "started": previous["started"] if same and previous else now(),
    }


def requested_commit(root: str) -> dict[str, Any]:
    """The commit sha= names, inspected on live's HEAD: {commit, head, branch}."""
    cfg = config.load(root)
    raw = config.variable("sha")
    if raw is None:
        raise PatchgateError(
            "PREFLIGHT",
            f"rollback needs sha=S, the commit of live to roll back (doit history lists "
            f"patchgate's); run {USAGE}",
        )
    live = cfg.live_repo
    head = git.live_head(live)
    branch = current_branch(live, cfg["branch"])
    commit = inspect_commit(live, raw.strip(), head, branch)
    return {"commit": commit, "head": head, "branch": branch}


def prepare_rollback(root: str) -> dict[str, Any]:
    """Action of _rollback, before rollback's tasks are planned: recovery of an interrupted
    landing, the commit sha= names; then the plan (sha= alone), or, confirmed, everything an
    execution does before its steps (``prepare_execution``)."""
    journal.recover_first(root, report.log_path(root, "rollback"))  # as every command does
    found = requested_commit(root)
    cfg = config.load(root)
    commit, head, branch = found["commit"], found["head"], found["branch"]
    if not executing(cfg):
        return {**found, "plan_only": prepare_plan(cfg, commit, head, branch)}
    log = report.log_path(root, f"issue_{trailers.rollback_issue(commit['sha'])}")
    return {**found, "execute": prepare_execution(cfg, commit, branch, log)}


def rollback_tasks(root: str, prepared: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Rollback's tasks, from what _rollback prepared (None: it did not run, doit list/help)."""
    log = report.log_path(root, "rollback")
    if prepared is None:  # doit list, or help: describe, touch nothing
        yield landing.placeholder("rollback", root, log, "plan", "rollback sha=S")
        return
    refused = prepare.error_of(prepared)
    if refused is not None:
        yield failed_creator("rollback", root, log, refused)
        return
    cfg = config.load(root)
    commit = prepared["commit"]
    issue = trailers.rollback_issue(commit["sha"])
    group = f"issue_{issue}"
    log = report.log_path(root, group)
    common: dict[str, Any] = {"root": root, "log": log, "stage": STAGE, "uptodate": [False]}
    if "plan_only" in prepared:
        yield from plan_only(prepared["plan_only"], issue, common)
        return
    yield from execute(cfg, commit, prepared["branch"], common, prepared["execute"])


def prepare_plan(
    cfg: config.Config, commit: dict[str, Any], head: str, branch: str
) -> dict[str, Any]:
    """doit rollback sha=S, in _rollback: the plan (nothing is written to live), or the
    unfinished rollback of this commit, or why there is no plan."""
    root, live = cfg.root, cfg.live_repo
    issue = trailers.rollback_issue(commit["sha"])
    state = read_state(os.path.join(state_dir(root, issue), "state.json"))
    landed = os.path.join(state_dir(root, issue), "land.json")
    if state is not None and os.path.exists(landed):
        record = read_json(landed)
        if git.is_ancestor(live, record["commit"], head):
            return {"unfinished": [state, record["commit"]]}
    notes = []
    if os.path.exists(journal.journal_path(root)):
        notes.append(
            f"{journal.JOURNAL} exists: a landing is running; this plan may be stale when it ends"
        )
    try:
        plan, _ = make_plan(root, live, commit, head, branch)
    except PatchgateError as err:
        return {"error": [err.stage, err.message]}
    return {"plan": plan, "notes": notes}


def plan_only(
    planned: dict[str, Any], issue: str, common: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """doit rollback sha=S: print the plan; nothing is written to live."""
    group, root, log = f"issue_{issue}", common["root"], common["log"]
    if "unfinished" in planned:
        yield step(
            group,
            f"{issue}-plan",
            show_unfinished,
            [*planned["unfinished"], log],
            **common,
            doc="an unfinished rollback of this commit: how to finish it",
        )
        return
    refused = prepare.error_of(planned)
    if refused is not None:
        yield failed_creator(group, root, log, refused, f"{issue}-plan")
        return
    yield step(
        group,
        f"{issue}-plan",
        show_plan,
        [planned["plan"], planned["notes"], log],
        **common,
        doc="the plan: commit, later commits, the revert, the token",
    )


def prepare_execution(
    cfg: config.Config, commit: dict[str, Any], branch: str, log: str
) -> dict[str, Any]:
    """doit rollback sha=S confirm=TOKEN operator=NAME reason=…, in _rollback: the lock (held
    to the end of the run), recovery, the plan again and its token, clean paths, fetching live,
    the jail probe; the confirmed state and the revert written. Returns what the creator
    declares: ``refused``, ``resume`` (its revert landed), ``done``, or the confirmed ``rb``."""
    root, live = cfg.root, cfg.live_repo
    sha = commit["sha"]
    issue = trailers.rollback_issue(sha)
    folder = state_dir(root, issue)
    state_file = os.path.join(folder, "state.json")
    land_file, push_file = os.path.join(folder, "land.json"), os.path.join(folder, "push.json")
    notes: list[str] = []
    try:
        request = confirmation(cfg, sha)
        lock.acquire(root, issue, TRIGGER)
        notes += journal.recover(root)
        head = git.live_head(live)
        previous = read_state(state_file)
        landed = landed_record(land_file, live) if previous else None
        if previous is not None and landed is not None:
            if request["token"] != previous["token"]:
                raise PatchgateError(
                    STAGE,
                    f"rollback {previous['rollback_id']} of {sha[:12]} landed its revert "
                    f"{landed['commit'][:12]} but did not finish; finish it with its own "
                    f"token: {rerun_command(previous)}",
                )
            notes.append(
                f"resuming {previous['rollback_id']}: its revert {landed['commit'][:12]} "
                "landed; pushing and recording it"
            )
            context(cfg, issue, branch, previous)  # its refusal (live_gates) comes first
            return {"resume": previous, "notes": notes}
        done = find_done(root, sha, str(request["token"]), live)
        if done is not None:
            return {"done": done}
        plan, diff = make_plan(root, live, commit, head, branch)
        check_revertible(plan)
        if request["token"] != plan["token"]:
            raise PatchgateError(
                STAGE,
                f"confirm={request['token']} does not match the plan of {sha[:12]} on live as "
                f"it is now (HEAD {head[:12]}): live moved since the plan, or the token is "
                f"mistyped — nothing was changed; plan again (doit rollback sha={sha}), review "
                "it, then run its CONFIRM line",
            )
        check_clean(
            live, plan["files"], f"the revert of {sha[:12]}", STAGE, "run the same command again"
        )
        notes += sync_live(cfg, branch, log)
        moved = git.live_head(live)
        if moved != head:
            raise PatchgateError(
                STAGE,
                f"live moved to {moved[:12]} while the rollback started (fetched from the "
                f"remote): the plan was made on {head[:12]}; plan again "
                f"(doit rollback sha={sha}) and confirm the new plan",
            )
        warning = jail.preflight(cfg["jail"])
        rb = confirmed_state(plan, request, previous)
        context(cfg, issue, branch, rb)  # its refusal (live_gates) before anything is written
        write_if_changed(diff_path(root, issue), diff)
        for stale in (land_file, push_file):
            if os.path.exists(stale):
                os.unlink(stale)
        write_json(state_file, rb)
    except PatchgateError as err:
        for note in notes:
            redact.tell(log, f"rollback: {note}")
        return {"refused": [err.stage, redact.redact(err.message)]}
    return {"plan": plan, "rb": rb, "head": head, "warning": warning, "notes": notes}


def execute(
    cfg: config.Config,
    commit: dict[str, Any],
    branch: str,
    common: dict[str, Any],
    prepared: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """doit rollback sha=S confirm=TOKEN operator=NAME reason=…: verify, land, push, record."""
    root, live, log = cfg.root, cfg.live_repo, common["log"]
    issue = trailers.rollback_issue(commit["sha"])
    group = f"issue_{issue}"
    ws = Workspace(root, issue)
    notes = tuple(prepared.get("notes", ()))
    try:
        if "refused" in prepared:
            raise PatchgateError(*prepared["refused"])
        if "done" in prepared:
            yield redact.step(
                group,
                f"{issue}-finish",
                report_done,
                [ws.dir, prepared["done"], log],
                **common,
                doc="done",
            )
            return
        if "resume" in prepared:
            ctx = replace(context(cfg, issue, branch, prepared["resume"]), notes=notes)
            yield from landing.chain(ROLLBACK, ctx, ws, group=group, log=log, resume=True)
            return
        plan, head = prepared["plan"], prepared["head"]
        ctx = context(cfg, issue, branch, prepared["rb"])
    except PatchgateError as err:
        yield redact.step(
            group,
            f"{issue}-preflight",
            landing.refuse,
            [ws.dir, err.stage, err.message],
            **{**common, "stage": err.stage},
            doc="refuse",
        )
        return
    plan_step = step(
        group,
        f"{issue}-plan",
        show_confirmed,
        [plan, replace(ctx, notes=notes), log],
        **common,
        doc="the confirmed plan",
        before_first_step=(liveguard.capture_live, (ws.dir, live)),
    )
    yield plan_step
    chain = list(
        verify.chain(
            cfg, diff_path(root, issue), issue, head, prepared["warning"], basename="rollback"
        )
    )
    # Before yielding: doit prefixes the names of the dicts it is given ("rollback:…").
    verified = next(
        (t["name"] for t in chain if t["name"] == f"{issue}-archive"), f"{issue}-preflight"
    )
    yield from chain
    yield from landing.chain(
        ROLLBACK,
        ctx,
        ws,
        group=group,
        log=log,
        resume=False,
        land_deps=[f"rollback:{verified}"],
        land_file_dep=[ws.result] if verified.endswith("-archive") else [],
    )
