"""doit audit, doit record, doit history: the provenance log checked against git history.

The audit cross-checks two of the guide's audit layers. The log (``audit/provenance.jsonl``)
must be an unbroken hash chain, and it must agree with the branch's history both ways. Both
sides are incremental, so the frequent audit costs what was added since the last one. The
work is split by concern; this module keeps the three commands' task creators and the small
actions of ``doit record`` and the post-landing ``audit_command``:

* ``audit_ledger``: the log read and verified (resumed from a checkpoint), its events folded;
* ``audit_history``: the patchgate commits on the branch, from their trailers (cached);
* ``audit_check``: the two matched both ways, the violations and notes;
* ``audit_report``: ``audit.json`` and ``audit.md``, the ``doit audit`` action, ``doit history``.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from . import config, doitapi, git, proc, provenance, report
from .audit_history import branch_name, branch_tip, is_ancestor
from .audit_ledger import CHECKPOINT_FILE, STATE_VERSION, log_stat, short
from .audit_report import AUDIT_JSON, AUDIT_MD, audit, show_history
from .errors import PatchgateError
from .provenance import EventKind
from .steps import failed_creator, step

STAGE = "AUDIT"
RECORD_STAGE = "RECORD"
AUDIT_COMMAND_TIMEOUT = 600.0
DEFAULT_HISTORY = 10

# Who writes the events `doit record` refuses: a hand-written one would forge their evidence.
_WRITTEN_BY: dict[str, str] = {**provenance.EVIDENCE_KINDS, EventKind.PROPOSE: "a patch source"}


# --- doit audit ------------------------------------------------------------------------------


def inputs_unchanged(
    task: Any, values: dict[str, Any], root: str, live: str, branch: str | None
) -> bool:
    """doit uptodate: the log and the branch tip are as the last successful audit saw them.

    Like config_changed, but evaluated only when doit checks this task: the other commands,
    whose creators run too, do not pay for its git call. The log is compared by its sha256
    (with device, inode and size), never by timestamps. A missing log is a state too.
    """
    try:
        now: dict[str, Any] | None = {
            "version": STATE_VERSION,
            "tip": branch_tip(live, branch),
            "branch": branch,
            "log": log_stat(root),
        }
    except PatchgateError:
        now = None  # the action reports it
    task.value_savers.append(lambda: {"audit_inputs": now})
    return now is not None and values.get("audit_inputs") == now


def _basename_task(task: dict[str, Any]) -> dict[str, Any]:
    """A step as a task of its own name (``audit``, not ``audit:audit``)."""
    return {k: v for k, v in task.items() if k != "name"}


def task_audit() -> dict[str, Any]:
    """Check the provenance log's hash chain and match it with git history, both ways.

    Writes audit/results/audit.json and audit.md; fails naming the first violation.
    Reruns only when the log or the branch tip changed (delete
    audit/results/chain-checkpoint.json to force a full check of the log).
    """
    root = os.getcwd()
    log = report.log_path(root, "audit")
    try:
        cfg = config.load(root)
    except PatchgateError as err:
        return _basename_task(failed_creator("audit", root, log, err))
    args = [root, cfg.live_repo, cfg["branch"]]
    targets = [os.path.join(root, p) for p in (AUDIT_JSON, AUDIT_MD, CHECKPOINT_FILE)]
    return _basename_task(
        step(
            "audit",
            "audit",
            audit,
            [*args, log],
            root=root,
            log=log,
            stage=STAGE,
            doc="Check the provenance log's hash chain and match it with git history, both ways.",
            targets=targets,
            uptodate=[(inputs_unchanged, args)],
            summary=targets[0],
        )
    )


def run_audit_command(
    root: str, command: list[str], live: str, log: str, timeout: float = AUDIT_COMMAND_TIMEOUT
) -> None:
    """AM's post-success audit: run the configured ``audit_command`` in live.

    ``{root}`` and ``{live}`` in an argument become the project and live paths. The command
    runs unjailed (it is the project's own configuration, like a git hook), with the pinned
    environment; its output goes to ``log``. Failure: PatchgateError("AUDIT", ...).
    """
    if not command:
        return
    argv = [arg.replace("{root}", root).replace("{live}", live) for arg in command]
    shown = shlex.join(command)
    report.log(log, f"audit_command: {shlex.join(argv)} (in {live})")
    done = proc.run(argv, cwd=live, env=proc.clean_env(), timeout=timeout)
    report.log(log, done.output)
    if done.timed_out:
        raise PatchgateError(
            STAGE,
            f"audit_command {shown} did not finish within {timeout:g} s "
            "on live; see the log, fix it or raise its timeout",
        )
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.output.splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        raise PatchgateError(
            STAGE, f"audit_command {shown} exited {done.returncode} on live: {last}; see the log"
        )


# --- doit record -----------------------------------------------------------------------------

RECORD_USAGE = (
    'doit record event=emergency_rollback last_good=SHA reason="what broke" operator=NAME'
)


def record(root: str, live: str, branch: str | None, fields: dict[str, str]) -> dict[str, Any]:
    """Action of ``doit record``: validate an emergency_rollback and append it to the log."""
    kind = fields.get("event", "").strip()
    if not kind:
        raise PatchgateError(RECORD_STAGE, f"which event? none given; run {RECORD_USAGE}")
    if kind not in provenance.EVENT_KINDS:
        raise PatchgateError(
            RECORD_STAGE,
            f"event={kind} is unknown; doit record writes emergency_rollback: {RECORD_USAGE}",
        )
    if kind != EventKind.EMERGENCY_ROLLBACK:
        raise PatchgateError(
            RECORD_STAGE,
            f"event={kind} is written by {_WRITTEN_BY[kind]}, "
            "never by hand; doit record writes emergency_rollback",
        )
    missing = [k for k in ("last_good", "reason", "operator") if not fields.get(k, "").strip()]
    if missing:
        given = " ".join(f"{k}=…" for k in missing)
        raise PatchgateError(RECORD_STAGE, f"emergency_rollback needs {given}; run {RECORD_USAGE}")
    last_good = fields["last_good"].strip()
    sha = _commit_in_live(live, last_good)
    tip = branch_tip(live, branch)
    if not is_ancestor(live, sha, tip):
        raise PatchgateError(
            RECORD_STAGE,
            f"last_good={last_good} ({short(sha)}) is not on "
            f"{branch_name(live, branch)}; give the commit live was "
            "reset to",
        )
    event = provenance.append_event(
        root,
        {
            "event": EventKind.EMERGENCY_ROLLBACK,
            "patch_id": provenance.NO_PATCH,
            "operator": fields["operator"].strip(),
            "last_good_commit": sha,
            "reason": " ".join(fields["reason"].split()),
        },
    )
    print(
        f"recorded emergency_rollback as seq {event['seq']} in {provenance.LOG_PATH}: "
        f"last good commit {sha}"
    )
    return {
        "summary": {
            "RESULT": "SUCCESS",
            "EVENT": f"emergency_rollback (seq {event['seq']})",
            "LAST_GOOD": sha,
        }
    }


def _commit_in_live(live: str, rev: str) -> str:
    bad = PatchgateError(
        RECORD_STAGE,
        f"last_good={rev} is not a commit in live repository "
        f"{live}; find it with git log --oneline -n 20",
    )
    sha = git.commit_of(live, rev)
    if sha is None:
        raise bad
    return sha


def task_record() -> dict[str, Any]:
    """Record an emergency rollback (made outside patchgate) in the provenance log.

    event=emergency_rollback last_good=SHA reason="..." operator=NAME
    """
    root = os.getcwd()
    log = report.log_path(root, "record")
    try:
        cfg = config.load(root)
    except PatchgateError as err:
        return _basename_task(failed_creator("record", root, log, err))
    fields = doitapi.command_line()
    return _basename_task(
        step(
            "record",
            "record",
            record,
            [root, cfg.live_repo, cfg["branch"], fields],
            root=root,
            log=log,
            stage=RECORD_STAGE,
            doc="Record an emergency rollback (made outside patchgate) in the provenance log.",
            uptodate=[False],
        )
    )


# --- doit history ----------------------------------------------------------------------------


def parse_count(raw: str | None) -> int:
    text = (raw or str(DEFAULT_HISTORY)).strip()
    if not text.isdigit() or int(text) < 1:
        raise PatchgateError(
            "PREFLIGHT", f"n={raw} must be a whole number of commits; give e.g. n=20"
        )
    return int(text)


def task_history() -> dict[str, Any]:
    """The latest patchgate commits (n=10): patch, verdict, operator, files, who reverted them."""
    root = os.getcwd()
    log = report.log_path(root, "history")
    try:
        cfg = config.load(root)
        n = parse_count(config.variable("n"))
    except PatchgateError as err:
        return _basename_task(failed_creator("history", root, log, err))
    return _basename_task(
        step(
            "history",
            "history",
            show_history,
            [root, cfg.live_repo, cfg["branch"], n],
            root=root,
            log=log,
            stage="HISTORY",
            doc="The latest patchgate commits: patch, verdict, operator, files, who reverted them.",
            uptodate=[False],
        )
    )
