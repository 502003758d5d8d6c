"""The report: what ``doit audit`` and ``doit history`` print, and the audit report files.

``audit`` (the action of ``doit audit``) runs the three parts (``audit_ledger.check_chain``,
``audit_history.check_history``, ``audit_check.cross_check``) and writes
``audit/results/audit.json`` (validated against ``schemas/audit-report.schema.json``) and
``audit.md``: what people and scripts read. ``show_history`` is ``doit history``'s table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

from . import forge, provenance, report, trailers
from .audit_check import CrossCheck, Violation, cross_check
from .audit_history import (
    Commit,
    HistoryResult,
    branch_name,
    branch_tip,
    check_history,
    landing_times,
    walk_limited,
)
from .audit_ledger import (
    RESULTS_DIR,
    Apply,
    Ledger,
    PatchState,
    Rollback,
    check_chain,
    confidences,
    rollback_events,
    same_commit,
    short,
)
from .errors import PatchgateError
from .steps import write_json

STAGE = "AUDIT"
AUDIT_JSON = os.path.join(RESULTS_DIR, "audit.json")
AUDIT_MD = os.path.join(RESULTS_DIR, "audit.md")
REPORT_SCHEMA = "audit-report.schema.json"
# audit.json / audit.md list the patches with the latest events only: validating 30,000 rows
# costs ~2 s, and nobody reads them.
REPORT_ROWS = 100
REPORT_VIOLATIONS = 1000
SHOWN_ON_FAILURE = 10


# --- the report files: audit.json rows and audit.md ------------------------------------------


def _status(
    state: PatchState, landed: bool, full: str | None, undone: bool, removed: int | None
) -> str:
    """``landed``: an apply event (for a rollback's revert: a rollback event) names its commit."""
    if not landed:
        if state.rollback_of:
            return "rollback verify failed" if state.verdict == "fail" else "rollback verified"
        if state.promote_failure:
            return "promote failed"
        verdict = (state.verdict or "").split(" ")[0]  # "pass (excused: ruff)" is a pass
        return {"pass": "verified", "fail": "verify failed"}.get(verdict, "proposed")
    if removed:
        return "removed"
    if full is None:
        return "missing"
    if undone:
        return "rolled back"
    return "rollback landed" if state.rollback_of else "landed"


def _landed_rollback(state: PatchState, by_target: Mapping[str, list[Rollback]]) -> Rollback | None:
    """The rollback event that landed the revert ``state`` verified: the first after it."""
    return next(
        (rb for rb in by_target.get(state.rollback_of or "", []) if rb.line > state.line), None
    )


def _row(
    pid: str, commit: Commit | None, full: str | None, status: str, check: CrossCheck
) -> dict[str, Any]:
    undo = check.rolled_back.get(full) if full else None
    return {
        "patch_id": pid,
        "verdict": commit.verdict if commit else None,
        "state": status,
        "commit": full,
        "operator": commit.operator if commit else None,
        "files": commit.files if commit else [],
        "rolled_back": undo is not None,
        "rolled_back_by": undo[0] if undo else None,
        "rollback_id": undo[1] if undo else None,
        "removed_at_line": None,
        "promote_failure": None,
        "line": None,
    }


def patch_rows(
    ledger: Ledger, commits: list[Commit], check: CrossCheck, limit: int
) -> list[dict[str, Any]]:
    """At most ``limit`` rows for the table, newest first.

    First the patch commits no apply event names (violations all), then the patches of the
    log with the latest events, joined with their commits. A rollback's revert (verified under
    the issue ``rollback-S12``) is joined with its ``rollback`` event instead of an apply.
    """
    by_sha = {c.sha: c for c in commits}
    last_apply = {a.patch_id: a for a in ledger.applies}
    by_target: dict[str, list[Rollback]] = {}
    for rb in ledger.rollbacks:
        by_target.setdefault(rb.reverted_commit[:12], []).append(rb)
    unrecorded = [
        c for c in commits if c.patch_id and not c.rollback_id and c.sha not in check.applied
    ]
    rows = [_row(str(c.patch_id), c, c.sha, "unrecorded", check) for c in unrecorded[:limit]]
    for pid in islice(reversed(ledger.patches), max(0, limit - len(rows))):
        landed = _landing_of(pid, ledger.patches[pid], last_apply, by_target)
        rows.append(_patch_row(pid, ledger.patches[pid], landed, by_sha, check))
    return rows


def _landing_of(
    pid: str,
    state: PatchState,
    last_apply: Mapping[str, Apply],
    by_target: Mapping[str, list[Rollback]],
) -> Apply | Rollback | None:
    """The event that landed the patch: its last apply, or for a revert its rollback event."""
    if state.rollback_of:
        return _landed_rollback(state, by_target)
    return last_apply.get(pid)


def _patch_row(
    pid: str,
    state: PatchState,
    ap: Apply | Rollback | None,
    by_sha: Mapping[str, Commit],
    check: CrossCheck,
) -> dict[str, Any]:
    """A patch of the log joined with the commit ``ap`` (its landing event, if any) names."""
    named: str | None
    files: list[str]
    if isinstance(ap, Rollback):
        named, files = ap.revert_commit, []
    else:
        named, files = (ap.commit, ap.files) if ap else (None, [])
    full = check.resolved.get(named) if named else None
    row = _row(pid, by_sha.get(full) if full else None, full, "", check)
    removed = check.removed.get(full or "") or (check.removed.get(named) if named else None)
    row.update(
        state=_status(state, ap is not None, full, row["rolled_back"], removed),
        verdict=state.verdict or row["verdict"],
        commit=full or named,
        operator=(ap.operator if ap else None) or row["operator"],
        files=files or row["files"] or state.files,
        removed_at_line=removed,
        promote_failure=state.promote_failure if ap is None else None,
        line=state.line,
    )
    if state.confidence is not None:  # issue 14: only for what a model proposed
        row["confidence_score"] = state.confidence
    return row


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "


def _files_cell(files: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(files[:most])
    return shown + (f" +{len(files) - most} more" if len(files) > most else "") or "-"


def _md_row(row: Mapping[str, Any]) -> str:
    commit = row["commit"]
    target = trailers.rollback_target(str(row["patch_id"]).rpartition("@")[0])
    if row["state"] in ("rollback verified", "rollback verify failed"):
        commit_cell = f"- (rollback of {target or '?'}, not landed)"
    elif row["state"] == "rollback landed":
        commit_cell = f"{short(commit)} (rollback of {target or '?'})"
    elif row["state"] == "unrecorded":
        commit_cell = f"{short(commit)} (no event in the log)"
    elif row["state"] == "promote failed":
        commit_cell = f"- (promote failed: {row['promote_failure']})"
    elif commit is None:
        commit_cell = "- (not promoted)"
    elif row["state"] == "removed":
        commit_cell = f"{short(commit)} (removed, emergency rollback line {row['removed_at_line']})"
    elif row["state"] == "missing":
        commit_cell = f"{short(commit)} (missing from live)"
    else:
        commit_cell = short(commit)
    if row["rolled_back"]:
        undone = f"yes, by {short(row['rolled_back_by'])}"
        undone += f" ({row['rollback_id']})" if row["rollback_id"] else ""
    else:
        undone = "no" if commit else "-"
    verdict = row["verdict"] or "-"
    if row.get("confidence_score") is not None:  # issue 14: a model proposed it
        verdict += f" (proposed, confidence {row['confidence_score']:g})"
    cells = [
        row["patch_id"],
        verdict,
        commit_cell,
        row["operator"] or "-",
        _files_cell(row["files"]),
        undone,
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render_md(data: Mapping[str, Any]) -> str:
    chain, hist = data["chain"], data["history"]
    verdict = "PASS" if data["verdict"] == "pass" else "FAIL"
    how = (
        f"resumed from the checkpoint, {chain['lines_parsed']} new line(s) read"
        if chain["resumed"]
        else "full check"
    )
    if chain["full_check_reason"]:
        how += f" ({chain['full_check_reason']})"
    walked = (
        f"{hist['walked']} new since {short(hist['previous_tip'])}"
        if hist["incremental"] and hist["previous_tip"]
        else "full walk"
    )
    lines = [
        f"# Audit of {data['branch']} at {short(data['tip'])}",
        "",
        f"**{verdict}**: {data['violations_total']} violation(s). "
        f"Generated {data['generated_at']}.",
        "",
        f"* Provenance log: {chain['events']} event(s) in `{provenance.LOG_PATH}`; {how}; "
        f"last full check {chain['last_full_check']}.",
        f"* History: {hist['commits']} patchgate commit(s) on {data['branch']} "
        f"({hist['patch_commits']} patch, {hist['rollback_commits']} rollback); {walked}.",
    ]
    if chain["pending_torn"]:
        lines.append(
            f"* Torn line(s) at the end of the log, recorded by the next append: "
            f"{', '.join(map(str, chain['pending_torn']))}."
        )
    if data["violations"]:
        lines += ["", "## Violations", ""]
        lines += [f"{i}. {_cell(v['message'])}" for i, v in enumerate(data["violations"], 1)]
        if data["violations_total"] > len(data["violations"]):
            lines.append(f"\n… and {data['violations_total'] - len(data['violations'])} more.")
    if data["notes"]:
        lines += ["", "## Notes", ""] + [f"* {_cell(n)}" for n in data["notes"]]
    shown = len(data["patches"])
    scope = f"the {shown} with the latest events" if shown == REPORT_ROWS else str(shown)
    lines += [
        "",
        f"## Patches ({scope}, newest first)",
        "",
        "| Patch | Verdict | Commit | Operator | Files | Rolled back |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_md_row(row) for row in data["patches"]]
    if data["emergency_rollbacks"]:
        lines += [
            "",
            "## Emergency rollbacks",
            "",
            "| Line | Operator | Last good commit | Reason |",
            "|---|---|---|---|",
        ]
        lines += [
            "| "
            + " | ".join(
                _cell(str(c))
                for c in (
                    e["line"],
                    e["operator"] or "-",
                    short(e["last_good_commit"]),
                    e["reason"] or "-",
                )
            )
            + " |"
            for e in data["emergency_rollbacks"]
        ]
    return "\n".join(lines) + "\n"


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --- doit audit ------------------------------------------------------------------------------


def audit(root: str, live: str, branch: str | None, log: str) -> dict[str, Any]:
    """Action of ``doit audit``: check, write audit.json and audit.md, fail on any violation."""
    tip = branch_tip(live, branch)
    name = branch_name(live, branch)
    chain = check_chain(root)
    history = check_history(root, live, branch or "HEAD", tip)
    check = cross_check(live, name, tip, history.commits, chain.ledger)
    violations = [
        Violation("chain", v.line_no, None, f"line {v.line_no}: {v.message}")
        for v in chain.report.violations
    ] + check.violations
    ledger, rep = chain.ledger, chain.report
    summary = _summary(violations, ledger, history)
    rows = patch_rows(ledger, history.commits, check, REPORT_ROWS)
    data = {
        "verdict": "fail" if violations else "pass",
        "summary": summary,
        "generated_at": provenance.utc_now(),
        "live": os.path.relpath(live, root),
        "branch": name,
        "tip": tip,
        "chain": {
            "events": ledger.events,
            "lines_parsed": rep.lines_parsed,
            "resumed": rep.resumed,
            "full_check_reason": rep.full_check_reason,
            "pending_torn": rep.pending_torn,
            "checkpoint_line": rep.checkpoint.line_count,
            "last_full_check": chain.last_full_check,
        },
        "history": {
            "commits": len(history.commits),
            "patch_commits": sum(1 for c in history.commits if not c.rollback_id),
            "rollback_commits": sum(1 for c in history.commits if c.rollback_id),
            "walked": history.walked,
            "incremental": history.incremental,
            "previous_tip": history.previous_tip,
        },
        "events": dict(sorted(ledger.kinds.items())),
        "violations": [v.as_dict() for v in violations[:REPORT_VIOLATIONS]],
        "violations_total": len(violations),
        "notes": check.notes[:REPORT_VIOLATIONS],
        "patches": rows,
        "emergency_rollbacks": [
            {
                "line": e.line,
                "operator": e.operator,
                "last_good_commit": e.last_good,
                "reason": e.reason,
            }
            for e in ledger.emergencies
        ],
    }
    write_json(os.path.join(root, AUDIT_JSON), data, schema=REPORT_SCHEMA)
    _write_text(os.path.join(root, AUDIT_MD), render_md(data))
    overview = (
        f"audit: {ledger.events} event(s) ({'resumed, ' if rep.resumed else 'full check, '}"
        f"{rep.lines_parsed} line(s) read), {len(history.commits)} patchgate commit(s) on {name} "
        f"({history.walked} walked), {len(violations)} violation(s)"
    )
    print(overview)
    report.log(log, overview)
    for v in violations[:SHOWN_ON_FAILURE]:
        print(f"  {v.message}")
        report.log(log, f"  {v.message}")
    if violations:
        what, _, where = summary["REASON"].rpartition("; ")
        raise PatchgateError(STAGE, what, fix=where)
    return {"summary": summary}


def _summary(violations: list[Violation], ledger: Ledger, history: HistoryResult) -> dict[str, str]:
    if violations:
        more = len(violations) - 1
        where = f"{more} more in {AUDIT_MD}" if more else f"see {AUDIT_MD}"
        return {"RESULT": "FAIL", "STAGE": STAGE, "REASON": f"{violations[0].message}; {where}"}
    return {
        "RESULT": "SUCCESS",
        "EVENTS": str(ledger.events),
        "COMMITS": str(len(history.commits)),
        "REPORT": AUDIT_MD,
    }


# --- doit history ----------------------------------------------------------------------------


def history_rows(root: str, live: str, branch: str | None, n: int) -> list[dict[str, Any]]:
    """The ``n`` latest patchgate commits of the branch, newest first, with who reverted them."""
    tip = branch_tip(live, branch)
    commits = walk_limited(live, tip, n)
    undone: list[tuple[str, str]] = []  # (reverted id, revert sha)
    for info in trailers.patchgate_commits(live, tip, markers=(trailers.ROLLBACK_ID,)):
        reverts = info.first(trailers.REVERTS)
        if reverts:
            undone.append((reverts, info.sha))
    for event in rollback_events(root):
        reverted, revert = event.get("reverted_commit"), event.get("revert_commit")
        if isinstance(reverted, str) and isinstance(revert, str):
            undone.append((reverted, revert))
    scores = confidences(root)  # issue 14: a model's confidence in what it proposed
    rows = []
    landed = landing_times(live, [c.sha for c in commits])
    for c in commits:
        by = next((sha for rid, sha in undone if same_commit(rid, c.sha)), None)
        rows.append(
            {
                "commit": c.sha,
                "landed": landed.get(c.sha),
                "patch_id": c.patch_id,
                "rollback_id": c.rollback_id,
                "reverts": c.reverts,
                "verdict": c.verdict,
                "operator": c.operator,
                "files": c.files,
                "rolled_back_by": by,
                "confidence": scores.get(c.patch_id or ""),
            }
        )
    return rows


HISTORY_COLUMNS = ("commit", "landed (UTC)", "patch", "operator", "verdict", "files")


def format_history(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The history as a table: a header and one line a commit, every column aligned."""
    if not rows:
        return []
    table = [list(HISTORY_COLUMNS)]
    for r in rows:
        if r["rollback_id"]:
            what, verdict = f"rollback {r['rollback_id']}", "-"
            detail = f"reverts {short(r['reverts'])}" if r["reverts"] else "reverts ?"
        else:
            what, verdict = str(r["patch_id"]), r["verdict"] or "-"
            detail = _files_cell(r["files"], 3)
            if r.get("confidence") is not None:  # issue 14
                detail += f"  proposed, confidence {r['confidence']:g}"
        if r["rolled_back_by"]:
            detail += f"  rolled back by {short(r['rolled_back_by'])}"
        when = r.get("landed") or "-"
        table.append([short(r["commit"]), when, what, r["operator"] or "-", verdict, detail])
    widths = [max(len(row[i]) for row in table) for i in range(len(HISTORY_COLUMNS) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in table
    ]


def show_history(root: str, live: str, branch: str | None, n: int) -> dict[str, Any]:
    rows = history_rows(root, live, branch, n)
    if not rows:
        print(f"no patchgate commits on {branch_name(live, branch)} yet")
    for line in format_history(rows):
        print(line)
    for line in forge.history_lines(root):  # issue 15: landings carried by pull requests
        print(line)
    return {"summary": {"RESULT": "SUCCESS", "COMMITS": str(len(rows))}}
