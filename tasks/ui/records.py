"""What the operator console shows, read from patchgate's own files into typed records.

Nothing here writes: the console acts only by running doit commands (``jobs``). The readers
reuse the command-line views where one exists (``status.workspace_rows`` for verdict and
staleness, ``audit_report.history_rows`` for the landings) so a page and a command never
disagree.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import audit_ledger, config, git, issue, provenance, status
from ..audit_report import AUDIT_JSON, AUDIT_MD, history_rows
from ..errors import PatchgateError
from ..report import LOGS_DIR
from ..steps import read_json
from ..workspace import WORKSPACES_DIR, Workspace

STAGE = "UI"
ISSUE_NAME = issue.ISSUE_ID  # what doit verify accepts as an issue id
SHA_TEXT = re.compile(r"^[0-9a-f]{7,40}$")
PROPOSE_FILE = "propose.json"
LOG_PAGE_LINES = 400
GATE_LOG_LINES = 200
DIFF_LIMIT = 512 * 1024
HISTORY_ROWS = 30


# --- workspaces ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceRow:
    """One workspace as the review list shows it."""

    issue: str
    verdict: str  # pass | fail | -
    state: str  # "current" or "stale: live moved, patch edited"
    base: str
    patch: str
    attempt: int
    confidence: float | None
    proposal_state: str | None

    @property
    def stale(self) -> bool:
        return self.state != "current"

    @property
    def promotable(self) -> bool:
        return self.verdict == "pass" and not self.stale


@dataclass(frozen=True)
class Attempt:
    """One proposal attempt from propose.json (issue 14's contract)."""

    n: int
    patch: str
    stage: str
    reason: str
    confidence: float | None
    feedback: str
    verdict: str


@dataclass(frozen=True)
class Proposal:
    state: str  # running | passed | waiting_operator
    model: str
    endpoint: str
    attempts: tuple[Attempt, ...]

    @property
    def confidence(self) -> float | None:
        scored = [a.confidence for a in self.attempts if a.confidence is not None]
        return scored[-1] if scored else None


@dataclass(frozen=True)
class Gate:
    name: str
    verdict: str
    reason: str
    exit_code: int | None
    duration: float | None
    checked: tuple[str, ...]
    command: tuple[str, ...]
    log: str  # this gate's part of the issue's latest run log
    log_truncated: bool


@dataclass(frozen=True)
class Scope:
    verdict: str
    changed: tuple[str, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    status: str
    path: str


@dataclass(frozen=True)
class LogFile:
    name: str
    size: int


@dataclass(frozen=True)
class IssueDetail:
    row: WorkspaceRow
    base_sha: str
    tree: str | None
    changes: tuple[Change, ...]
    diff: str
    diff_source: str
    diff_truncated: bool
    gates: tuple[Gate, ...]
    scope: Scope | None
    result_text: str | None  # result.json as written
    summary: Mapping[str, str]
    proposal: Proposal | None
    logs: tuple[LogFile, ...]
    verified_by: str | None = None  # issue 17: "dask worker ADDRESS" when a cluster verified it


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read_optional(path: str) -> Any:
    """A JSON file, or None when it is missing or unreadable (a page shows what there is)."""
    try:
        return read_json(path)
    except (OSError, ValueError, PatchgateError):
        return None


def check_issue(issue: str) -> str:
    if not ISSUE_NAME.match(issue) or ".." in issue:
        raise PatchgateError(STAGE, f"{issue!r} is not an issue name; pick one from the list")
    return issue


def proposal(ws: Workspace) -> Proposal | None:
    data = _read_optional(ws.path(PROPOSE_FILE))
    if not isinstance(data, dict):
        return None
    attempts = []
    for i, raw in enumerate(data.get("attempts") or [], start=1):
        if not isinstance(raw, dict):
            continue
        n = raw.get("n")
        attempts.append(
            Attempt(
                n=n if isinstance(n, int) else i,
                patch=_text(raw.get("patch")),
                stage=_text(raw.get("stage")),
                reason=_text(raw.get("reason")),
                confidence=_number(raw.get("confidence_score")),
                feedback=_text(raw.get("feedback")),
                verdict=_text(raw.get("verdict")),
            )
        )
    return Proposal(
        state=_text(data.get("state")) or "-",
        model=_text(data.get("model")),
        endpoint=_text(data.get("llm_endpoint")),
        attempts=tuple(attempts),
    )


def workspaces(root: str) -> list[WorkspaceRow]:
    """Every workspace: ``doit status``'s verdict and stale flag, attempt and confidence."""
    rows = []
    for row in status.workspace_rows(root):
        ws = Workspace(root, row["issue"])
        meta = _read_optional(ws.meta) or {}
        found = proposal(ws)
        attempt = meta.get("attempt") if isinstance(meta, dict) else None
        rows.append(
            WorkspaceRow(
                issue=row["issue"],
                verdict=row["verdict"],
                state=row["state"],
                base=row["base"],
                patch=row["patch"],
                attempt=attempt if isinstance(attempt, int) else 0,
                confidence=found.confidence if found else None,
                proposal_state=found.state if found else None,
            )
        )
    return rows


def workspace_row(root: str, issue: str) -> WorkspaceRow:
    check_issue(issue)
    for row in workspaces(root):
        if row.issue == issue:
            return row
    raise PatchgateError(STAGE, f"there is no workspace issue_{issue}; see the review list")


# --- logs ---------------------------------------------------------------------------------


def issue_logs(root: str, issue: str) -> list[LogFile]:
    """The issue's run logs, oldest first (their names start with the run's UTC stamp)."""
    folder = os.path.join(root, LOGS_DIR)
    found = sorted(
        glob.glob(os.path.join(glob.escape(folder), f"*_issue_{glob.escape(issue)}.log"))
    )
    return [LogFile(os.path.basename(p), os.path.getsize(p)) for p in found]


@dataclass(frozen=True)
class LogPage:
    name: str
    page: int  # 1-based
    pages: int
    first_line: int  # 1-based number of the first line shown
    text: str


def log_page(root: str, issue: str, name: str, page: int) -> LogPage:
    """Page ``page`` of one of the issue's run logs, LOG_PAGE_LINES lines a page."""
    check_issue(issue)
    if name not in {log.name for log in issue_logs(root, issue)}:
        raise PatchgateError(
            STAGE, f"{name!r} is not a log of issue {issue}; pick one from its page"
        )
    with open(os.path.join(root, LOGS_DIR, name), encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    pages = max(1, math.ceil(len(lines) / LOG_PAGE_LINES))
    page = min(max(1, page), pages)
    start = (page - 1) * LOG_PAGE_LINES
    return LogPage(name, page, pages, start + 1, "\n".join(lines[start : start + LOG_PAGE_LINES]))


def gate_sections(text: str) -> dict[str, list[str]]:
    """Each gate's lines of a run log: from ``gate NAME: command`` to ``gate NAME: verdict``."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        found = re.match(r"^gate ([A-Za-z0-9][A-Za-z0-9_.-]*): (.*)$", line)
        if found and current is None:
            current = found.group(1)
            sections[current] = [line]
            continue
        if current is not None:
            sections[current].append(line)
            if found and found.group(1) == current and re.match(r"^(pass|fail)\b", found.group(2)):
                current = None
    return sections


# --- one issue ----------------------------------------------------------------------------


def _diff(root: str, ws: Workspace, meta: Mapping[str, Any], tree: str | None) -> tuple[str, str]:
    base = meta.get("base_sha")
    if tree and isinstance(base, str):
        text = git.diff_text(
            ws.repo if os.path.isdir(ws.repo) else meta.get("live_repo", root), base, tree
        )
        if text is not None:
            return text, f"git diff {base[:12]} {tree[:12]} (base to the verified tree)"
    patch = meta.get("patch")
    if isinstance(patch, str) and os.path.isfile(patch):
        with open(patch, encoding="utf-8", errors="replace") as fh:
            return fh.read(DIFF_LIMIT + 1), f"the patch file {os.path.relpath(patch, root)}"
    return "", "no diff: the workspace has no verified tree and its patch file is gone"


def _gates(ws: Workspace, result: Mapping[str, Any], log_text: str) -> list[Gate]:
    sections = gate_sections(log_text)
    names = list(result.get("gates") or {})
    for path in sorted(glob.glob(os.path.join(glob.escape(ws.path("gates")), "*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        if name not in names:
            names.append(name)
    gates = []
    for name in names:
        data = _read_optional(ws.gate_file(name))
        data = data if isinstance(data, dict) else dict((result.get("gates") or {}).get(name) or {})
        lines = sections.get(name, [])
        exit_code = data.get("exit_code")
        gates.append(
            Gate(
                name=name,
                verdict=_text(data.get("verdict")) or "-",
                reason=_text(data.get("reason")),
                exit_code=exit_code if isinstance(exit_code, int) else None,
                duration=_number(data.get("duration_seconds")),
                checked=tuple(str(p) for p in data.get("checked") or []),
                command=tuple(str(a) for a in data.get("command") or []),
                log="\n".join(lines[:GATE_LOG_LINES]),
                log_truncated=len(lines) > GATE_LOG_LINES,
            )
        )
    return gates


def issue_detail(root: str, issue: str) -> IssueDetail:
    row = workspace_row(root, issue)
    ws = Workspace(root, issue)
    meta = _read_optional(ws.meta) or {}
    result_raw: str | None = None
    result: dict[str, Any] = {}
    if os.path.exists(ws.result):
        with open(ws.result, encoding="utf-8", errors="replace") as fh:
            result_raw = fh.read()
        loaded = _read_optional(ws.result)
        result = loaded if isinstance(loaded, dict) else {}
    tree = result.get("tree") if isinstance(result.get("tree"), str) else None
    diff, source = _diff(root, ws, meta, tree)
    logs = issue_logs(root, issue)
    log_text = ""
    if logs:
        with open(
            os.path.join(root, LOGS_DIR, logs[-1].name), encoding="utf-8", errors="replace"
        ) as fh:
            log_text = fh.read()
    scope_data = _read_optional(ws.step_file("scope"))
    scope = None
    if isinstance(scope_data, dict):
        scope = Scope(
            verdict=_text(scope_data.get("verdict")) or "-",
            changed=tuple(str(p) for p in scope_data.get("changed") or []),
            problems=tuple(_text(p) for p in scope_data.get("problems") or []),
        )
    changes = tuple(
        Change(_text(c.get("status")), _text(c.get("path")))
        for c in result.get("changes") or []
        if isinstance(c, dict)
    )
    summary = result.get("summary") if isinstance(result.get("summary"), dict) else {}
    return IssueDetail(
        row=row,
        base_sha=_text(meta.get("base_sha")),
        tree=tree,
        changes=changes,
        diff=diff[:DIFF_LIMIT],
        diff_source=source,
        diff_truncated=len(diff) > DIFF_LIMIT,
        gates=tuple(_gates(ws, result, log_text)),
        scope=scope,
        result_text=result_raw,
        summary={str(k): _text(v) for k, v in (summary or {}).items()},
        proposal=proposal(ws),
        logs=tuple(logs),
        verified_by=_verified_by(result.get("verified_by")),
    )


def _verified_by(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    return (
        " ".join(f"{_text(value.get(key))}" for key in ("executor", "worker") if value.get(key))
        or None
    )


# --- history and what waits for an operator -----------------------------------------------


@dataclass(frozen=True)
class Landing:
    commit: str
    time: str
    subject: str
    patch_id: str | None
    rollback_id: str | None
    reverts: str | None
    verdict: str | None
    operator: str | None
    confidence: float | None
    files: tuple[str, ...]
    rolled_back_by: str | None


def _commit_lines(live: str, shas: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Commit time (ISO) and subject of each of ``shas``, in one git call."""
    if not shas:
        return {}
    found = {}
    for parts in git.commit_summaries(live, shas, stage=STAGE):
        if len(parts) == 3 and parts[1].isdigit():
            when = datetime.fromtimestamp(int(parts[1]), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            found[parts[0]] = (when, parts[2])
    return found


def confidences(events: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """patch id -> the confidence score of its latest ``propose`` event that has one."""
    found = {}
    for event in events:
        score = _number(event.get("confidence_score"))
        pid = event.get("patch_id")
        if event.get("event") == "propose" and isinstance(pid, str) and score is not None:
            found[pid] = score
    return found


def landings(root: str, n: int = HISTORY_ROWS) -> list[Landing]:
    """``doit history``'s rows, with each commit's time and subject and the patch's confidence."""
    cfg = config.load(root, {})
    rows = history_rows(root, cfg.live_repo, cfg["branch"], n)
    lines = _commit_lines(cfg.live_repo, [r["commit"] for r in rows])
    scores = confidences(provenance.read_events(root))
    return [
        Landing(
            commit=r["commit"],
            time=lines.get(r["commit"], ("", ""))[0],
            subject=lines.get(r["commit"], ("", ""))[1],
            patch_id=r["patch_id"],
            rollback_id=r["rollback_id"],
            reverts=r["reverts"],
            verdict=r["verdict"],
            operator=r["operator"],
            confidence=scores.get(r["patch_id"] or ""),
            files=tuple(r["files"]),
            rolled_back_by=r["rolled_back_by"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Waiting:
    """Something only an operator can decide: a proposed rollback or an escalated proposal."""

    kind: str  # rollback | proposal
    what: str  # the commit (rollback) or the issue (proposal)
    source: str
    time: str
    failure_context: str
    confirm: str | None


def waiting(root: str) -> list[Waiting]:
    events = provenance.read_events(root)
    rolled_back = [e.get("reverted_commit") for e in events if e.get("event") == "rollback"]
    found: dict[str, Waiting] = {}
    for event in events:
        sha = event.get("sha")
        if event.get("event") != "rollback_proposed" or not isinstance(sha, str):
            continue
        if any(isinstance(r, str) and audit_ledger.same_commit(r, sha) for r in rolled_back):
            continue
        found[sha] = Waiting(
            kind="rollback",
            what=sha,
            source=_text(event.get("source")) or "-",
            time=_text(event.get("timestamp")),
            failure_context=_text(event.get("failure_context")),
            confirm=_text(event.get("confirm")) or None,
        )
    items = list(found.values())
    top = os.path.join(root, WORKSPACES_DIR)
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        issue = name.removeprefix("issue_")
        if not ISSUE_NAME.match(issue):
            continue
        ws = Workspace(root, issue)
        found_proposal = proposal(ws)
        if found_proposal is None or found_proposal.state != "waiting_operator":
            continue
        last = found_proposal.attempts[-1] if found_proposal.attempts else None
        context = (
            f"attempt {last.n}: {last.verdict or '-'} at {last.stage or '-'}: {last.reason}"
            + (f"\nfed back: {last.feedback}" if last.feedback else "")
            if last
            else "no attempts recorded"
        )
        stamp = datetime.fromtimestamp(os.path.getmtime(ws.path(PROPOSE_FILE)), UTC)
        when = stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
        items.append(
            Waiting("proposal", issue, found_proposal.model or "proposal", when, context, None)
        )
    return items


# --- audit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditReport:
    markdown: str | None
    verdict: str
    generated_at: str
    violations: int | None


def audit_report(root: str) -> AuditReport:
    data = _read_optional(os.path.join(root, AUDIT_JSON))
    data = data if isinstance(data, dict) else {}
    markdown = None
    path = os.path.join(root, AUDIT_MD)
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as fh:
            markdown = fh.read()
    total = data.get("violations_total")
    return AuditReport(
        markdown=markdown,
        verdict=_text(data.get("verdict")) or "-",
        generated_at=_text(data.get("generated_at")),
        violations=total if isinstance(total, int) else None,
    )
