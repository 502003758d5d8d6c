"""doit audit, doit record, doit history: the provenance log checked against git history.

The audit cross-checks two of the guide's audit layers. The log (``audit/provenance.jsonl``)
must be an unbroken hash chain, and it must agree with the branch's history both ways: every
commit patchgate made (a ``Patchgate-Patch-Id`` or ``Patchgate-Rollback-Id`` trailer) has its
``apply`` / ``rollback`` event, and every such event names a commit that exists, is on the
branch and says what the event says (patch id; for a revert, the commit it reverts). Commits
no longer on the branch are accepted only when a later ``emergency_rollback`` event explains
them.

Both sides are incremental, so the frequent audit costs what was added since the last one:

* the chain resumes from ``audit/results/chain-checkpoint.json`` (after comparing a sha256 of
  the verified part of the log, see ``provenance.verify_chain``); next to the checkpoint is the
  *ledger*: what the verified events said, folded (applies, rollbacks, emergencies, per patch
  its verdict, files and, for the verification of a rollback's revert, the commit it reverts),
  so the resumed check only folds the new events. Both are stored only when the chain is
  intact: after a violation every audit checks the whole log again, against the last good
  checkpoint;
* history: ``audit/results/history-cache.json`` keeps the patchgate commits up to the tip
  audited last; when that tip is an ancestor of the new one only the new commits are walked.

The cross-check itself runs in memory on the whole ledger and history each time: it is cheap
next to reading either. The caches are internal (no schema): anything unreadable in them is
ignored and rebuilt. What people and scripts read is ``audit.json`` (validated against
``schemas/audit-report.schema.json``) and ``audit.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

from . import config, doitapi, forge, git, proc, propose, provenance, report, trailers
from .errors import PatchgateError
from .steps import failed_creator, step, write_json

STAGE = "AUDIT"
RECORD_STAGE = "RECORD"
RESULTS_DIR = os.path.join("audit", "results")
AUDIT_JSON = os.path.join(RESULTS_DIR, "audit.json")
AUDIT_MD = os.path.join(RESULTS_DIR, "audit.md")
CHECKPOINT_FILE = os.path.join(RESULTS_DIR, "chain-checkpoint.json")
HISTORY_CACHE = os.path.join(RESULTS_DIR, "history-cache.json")
REPORT_SCHEMA = "audit-report.schema.json"
# Bump when what the caches hold, or how it is derived, changes: old caches are then ignored.
STATE_VERSION = 2
# audit.json / audit.md list the patches with the latest events only: validating 30,000 rows
# costs ~2 s, and nobody reads them. The ledger keeps the state of this many patches (the
# applies, rollbacks and emergencies all): what a rerun loads must not grow with the log.
REPORT_ROWS = 100
LEDGER_PATCHES = 1000
REPORT_VIOLATIONS = 1000
SHOWN_ON_FAILURE = 10
AUDIT_COMMAND_TIMEOUT = 600.0
DEFAULT_HISTORY = 10

_HEX = re.compile(r"^[0-9a-f]{7,64}$")
_REVERTS_LINE = re.compile(r"^This reverts commit ([0-9a-f]{7,64})\b", re.MULTILINE)
_PATCH_KINDS = ("propose", "verify_pass", "verify_fail", "apply", "promote_fail", "rollback")
# Who writes the events `doit record` refuses: a hand-written one would forge their evidence.
_WRITTEN_BY = {
    "propose": "a patch source",
    "verify_pass": "doit verify",
    "verify_fail": "doit verify",
    "apply": "doit promote",
    "promote_fail": "doit promote",
    "rollback": "doit rollback",
    "recovered": "the log itself",
    # issue 15
    "rollback_proposed": "doit watch",
    "monitor": "doit watch",
    "pull_request": "doit promote (landing: pull_request)",
}


# --- the ledger: what the verified events said ----------------------------------------------


class Apply(NamedTuple):
    line: int
    patch_id: str
    commit: str
    operator: str | None
    files: list[str]


class Rollback(NamedTuple):
    line: int
    patch_id: str
    rollback_id: str | None
    revert_commit: str
    reverted_commit: str
    operator: str | None


class Emergency(NamedTuple):
    line: int
    last_good: str
    operator: str | None
    reason: str | None


@dataclass(slots=True)
class PatchState:
    """One patch as its events tell it; ``line`` is its latest event's.

    ``rollback_of``: set when the "patch" is the revert doit rollback verified (its verify
    events' ``issue`` is ``rollback-S12``): the first 12 hex digits of the commit it reverts.
    """

    line: int
    verdict: str | None = None
    files: list[str] = field(default_factory=list)
    promote_failure: str | None = None
    rollback_of: str | None = None
    confidence: float | None = None  # issue 14: the proposing model's confidence_score


@dataclass
class Ledger:
    events: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    applies: list[Apply] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)
    emergencies: list[Emergency] = field(default_factory=list)
    patches: dict[str, PatchState] = field(default_factory=dict)  # latest event last
    # commit -> [line, "STAGE: reason"] of promote_fail events naming a commit that stays in live
    unfinished: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "kinds": self.kinds,
            "applies": self.applies,
            "rollbacks": self.rollbacks,
            "emergencies": self.emergencies,
            "patches": [
                [pid, p.line, p.verdict, p.files, p.promote_failure, p.rollback_of, p.confidence]
                for pid, p in self.patches.items()
            ],
            "unfinished": self.unfinished,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ledger:
        return cls(
            events=int(data["events"]),
            kinds={str(k): int(v) for k, v in data["kinds"].items()},
            applies=[Apply(*row) for row in data["applies"]],
            rollbacks=[Rollback(*row) for row in data["rollbacks"]],
            emergencies=[Emergency(*row) for row in data["emergencies"]],
            patches={row[0]: PatchState(*row[1:]) for row in data["patches"]},
            unfinished=dict(data["unfinished"]),
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _paths(value: Any) -> list[str]:
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def fold(ledger: Ledger, events: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
    """Add ``events`` (line number, event), in log order, to ``ledger``."""
    for line, ev in events:
        kind = ev.get("event")
        kind = kind if isinstance(kind, str) else "?"
        ledger.events += 1
        ledger.kinds[kind] = ledger.kinds.get(kind, 0) + 1
        pid = _text(ev.get("patch_id")) or provenance.NO_PATCH
        if kind == "apply":
            commit = _text(ev.get("commit_hash")) or ""
            operator = _text(ev.get("operator"))
            ledger.applies.append(Apply(line, pid, commit, operator, _paths(ev.get("files"))))
        elif kind == "rollback":
            ledger.rollbacks.append(
                Rollback(
                    line,
                    pid,
                    _text(ev.get("rollback_id")),
                    _text(ev.get("revert_commit")) or "",
                    _text(ev.get("reverted_commit")) or "",
                    _text(ev.get("operator")),
                )
            )
        elif kind == "emergency_rollback":
            ledger.emergencies.append(
                Emergency(
                    line,
                    _text(ev.get("last_good_commit")) or "",
                    _text(ev.get("operator")),
                    _text(ev.get("reason")),
                )
            )
        if pid == provenance.NO_PATCH or kind not in _PATCH_KINDS:
            continue
        state = ledger.patches.pop(pid, None) or PatchState(line)
        state.line = line
        if kind in ("verify_pass", "verify_fail"):
            state.verdict = "pass" if kind == "verify_pass" else "fail"
            if isinstance(ev.get("gates"), dict):  # issue 11: "pass (excused: ruff)"
                state.verdict = trailers.verdict_label(state.verdict, ev["gates"])
            state.files = _paths(ev.get("affected_files")) or state.files
            state.rollback_of = trailers.rollback_target(ev.get("issue")) or state.rollback_of
        elif kind == "promote_fail":
            stage, reason = _text(ev.get("stage")) or "?", _text(ev.get("reason")) or "?"
            state.promote_failure = f"{stage}: {reason}"
            if _text(ev.get("commit_hash")):  # committed, then failed (e.g. a required push)
                ledger.unfinished[ev["commit_hash"]] = [line, stage]
        elif kind == "apply":
            state.promote_failure = None
        elif kind == "propose" and isinstance(ev.get("confidence_score"), int | float):
            state.confidence = float(ev["confidence_score"])  # issue 14
        ledger.patches[pid] = state  # re-inserted: the dict stays ordered by latest event
    for pid in list(islice(ledger.patches, max(0, len(ledger.patches) - LEDGER_PATCHES))):
        del ledger.patches[pid]  # a patch evicted and seen again starts from its new events


# --- history: the patchgate commits on the branch -------------------------------------------


class Commit(NamedTuple):
    """A patchgate commit, reduced to what the audit uses; ``problem``: trailers that do not parse.

    A tuple: the history cache holds one per commit, and a rerun rebuilds them all.
    """

    sha: str
    patch_id: str | None
    rollback_id: str | None
    reverts: str | None
    operator: str | None
    files: list[str]
    verdict: str | None
    problem: str | None

    @property
    def label(self) -> str:
        if self.rollback_id:
            return f"rollback {self.rollback_id}"
        return f"patch {self.patch_id}"


def _values(info: trailers.CommitInfo, key: str) -> list[str]:
    return [v for name, vs in info.trailers.items() if name.lower() == key.lower() for v in vs]


def commit_of(info: trailers.CommitInfo, message: str | None = None) -> Commit:
    """``info`` reduced; ``message`` (the full one) to find "This reverts commit X" lines."""
    problems = []
    for key in trailers.MARKER_KEYS:
        if len(_values(info, key)) > 1:
            problems.append(f"{len(_values(info, key))} {key} trailers")
    rollback_id = info.first(trailers.ROLLBACK_ID)
    reverts = info.first(trailers.REVERTS)
    if reverts is None and message is not None:
        found = _REVERTS_LINE.search(message)
        reverts = found.group(1) if found else None
    if reverts is not None and not _HEX.match(reverts):
        problems.append(f"{trailers.REVERTS} {reverts!r} is not a commit id")
        reverts = None
    if rollback_id and reverts is None:
        problems.append(
            f"a rollback commit without a {trailers.REVERTS} trailer or a "
            '"This reverts commit" line'
        )
    verification = info.first(trailers.VERIFICATION)
    files = info.first(trailers.FILES)
    return Commit(
        sha=info.sha,
        patch_id=info.first(trailers.PATCH_ID),
        rollback_id=rollback_id,
        reverts=reverts,
        operator=info.first(trailers.OPERATOR),
        files=trailers.split_files(files) if files else [],
        verdict=trailers.verdict_label(*trailers.parse_verification(verification))
        if verification
        else None,
        problem="; ".join(problems) or None,
    )


def messages(live: str, shas: Sequence[str]) -> dict[str, str]:
    """Full commit messages of existing commits ``shas``, in one git call."""
    if not shas:
        return {}
    done = git.run(
        live, "log", "--no-walk=unsorted", "-z", "--format=%H%x00%B", *shas, "--", stage=STAGE
    )
    fields = done.output.split("\x00")
    return {sha.strip(): body for sha, body in zip(fields[0::2], fields[1::2], strict=False)}


def walk(live: str, rev: str) -> list[Commit]:
    """The patchgate commits of ``rev`` (a commit or a range), newest first."""
    infos = trailers.patchgate_commits(live, rev)
    bare = [i.sha for i in infos if i.first(trailers.ROLLBACK_ID) and not i.first(trailers.REVERTS)]
    bodies = messages(live, bare)
    return [commit_of(info, bodies.get(info.sha)) for info in infos]


def branch_tip(live: str, branch: str | None) -> str:
    """The commit the audit checks: live's HEAD, or the configured branch's tip."""
    head = git.live_head(live)
    if not branch:
        return head
    ref = f"refs/heads/{branch}^{{commit}}"
    done = git.run(live, "rev-parse", "--verify", "-q", ref, check=False)
    if done.returncode != 0:
        raise PatchgateError(
            "PREFLIGHT",
            f"branch {branch!r} does not exist in live repository {live}; "
            "set branch in patchgate.yaml to a branch of live",
        )
    return done.output.strip()


def branch_name(live: str, branch: str | None) -> str:
    if branch:
        return branch
    done = git.run(live, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    return done.output.strip() if done.returncode == 0 else "HEAD"


def is_ancestor(live: str, commit: str, tip: str) -> bool:
    done = git.run(live, "merge-base", "--is-ancestor", commit, tip, check=False)
    return done.returncode == 0


def resolve(live: str, names: Iterable[str]) -> dict[str, str]:
    """Commit ids (full or abbreviated) to full shas, for those that are commits in live."""
    wanted = sorted({n for n in names if _HEX.match(n)})
    if not wanted:
        return {}
    done = git.run(
        live,
        "cat-file",
        "--batch-check=%(objectname) %(objecttype)",
        input_bytes="".join(f"{n}\n" for n in wanted).encode(),
        stage=STAGE,
    )
    found = {}
    for name, line in zip(wanted, done.output.splitlines(), strict=False):
        sha, _, kind = line.partition(" ")
        if kind == "commit":
            found[name] = sha
    return found


# --- caches ----------------------------------------------------------------------------------


def _read_cache(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return None
    return data


def _write_cache(path: str, data: Mapping[str, Any]) -> None:
    """Atomic, compact (the caches are large and only the audit reads them)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    text = json.dumps(data, separators=(",", ":"))  # json.dump would not use the C encoder
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Stored:
    checkpoint: provenance.ChainCheckpoint
    ledger: Ledger
    last_full_check: str


def load_checkpoint(root: str) -> Stored | None:
    data = _read_cache(os.path.join(root, CHECKPOINT_FILE))
    if data is None:
        return None
    try:
        return Stored(
            provenance.ChainCheckpoint.from_dict(data["checkpoint"]),
            Ledger.from_dict(data["ledger"]),
            str(data["last_full_check"]),
        )
    except (PatchgateError, KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass
class ChainResult:
    report: provenance.ChainReport
    ledger: Ledger  # every event of the log, the unterminated last line's too
    last_full_check: str


def check_chain(root: str) -> ChainResult:
    """verify_chain resumed from the stored checkpoint; store the new one if the chain holds."""
    stored = load_checkpoint(root)
    resume = stored.checkpoint if stored and stored.checkpoint.offset > 0 else None
    chain = provenance.verify_chain(root, resume, check_prefix=True)
    ledger = stored.ledger if stored and chain.resumed else Ledger()
    verified = chain.checkpoint.line_count
    fold(ledger, (e for e in chain.events if e[0] <= verified))
    last_full = stored.last_full_check if stored and chain.resumed else provenance.utc_now()
    if chain.ok and (chain.checkpoint != resume or stored is None):
        _write_cache(
            os.path.join(root, CHECKPOINT_FILE),
            {
                "version": STATE_VERSION,
                "log": provenance.LOG_PATH,
                "last_full_check": last_full,
                "checkpoint": chain.checkpoint.to_dict(),
                "ledger": ledger.to_dict(),
            },
        )
    beyond = [e for e in chain.events if e[0] > verified]  # a last line without its "\n"
    fold(ledger, beyond)
    return ChainResult(chain, ledger, last_full)


@dataclass
class HistoryResult:
    commits: list[Commit]  # newest first
    walked: int
    incremental: bool
    previous_tip: str | None


def check_history(root: str, live: str, ref: str, tip: str) -> HistoryResult:
    """The branch's patchgate commits, walking only those added since the cached tip."""
    path = os.path.join(root, HISTORY_CACHE)
    data = _read_cache(path)
    cached: list[Commit] | None = None
    old: str | None = None
    if data is not None and data.get("live") == live and data.get("ref") == ref:
        try:
            cached = [Commit(*row) for row in data["commits"]]
            old = str(data["tip"])
        except (KeyError, TypeError):
            cached = None
    if cached is not None and old == tip:
        return HistoryResult(cached, 0, True, old)
    if cached is not None and old is not None and is_ancestor(live, old, tip):
        new = walk(live, f"{old}..{tip}")
        commits, incremental = new + cached, True
    else:
        new = commits = walk(live, tip)
        incremental = False
    _write_cache(
        path, {"version": STATE_VERSION, "live": live, "ref": ref, "tip": tip, "commits": commits}
    )
    return HistoryResult(commits, len(new), incremental, old)


# --- the cross-check -------------------------------------------------------------------------


class Violation(NamedTuple):
    kind: str  # chain | log | history
    line: int | None
    commit: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


def short(sha: str) -> str:
    return sha[:12]


def same_commit(a: str, b: str) -> bool:
    """Two commit ids name the same commit (either may be abbreviated, 7+ hex digits)."""
    return bool(_HEX.match(a) and _HEX.match(b)) and (a.startswith(b) or b.startswith(a))


@dataclass
class CrossCheck:
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)  # commit id in an event -> full sha
    removed: dict[str, int] = field(default_factory=dict)  # full sha / id -> emergency line
    # full sha of a reverted commit -> (revert commit, rollback id)
    rolled_back: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    applied: set[str | None] = field(default_factory=set)  # commits named by apply events


class _Matcher:
    """Both directions of the match, with the few git lookups they need batched."""

    def __init__(self, live: str, branch: str, tip: str, commits: list[Commit], ledger: Ledger):
        self.live, self.branch, self.tip, self.ledger = live, branch, tip, ledger
        self.by_sha = {c.sha: c for c in commits}
        self.commits = commits
        self.out = CrossCheck()
        self._ancestry: dict[str, bool] = {}
        names = [a.commit for a in ledger.applies]
        names += [n for r in ledger.rollbacks for n in (r.revert_commit, r.reverted_commit)]
        names += [e.last_good for e in ledger.emergencies]
        names += [c.reverts for c in commits if c.reverts]
        self.out.resolved = {n: n for n in names if n in self.by_sha}
        self.out.resolved.update(resolve(live, (n for n in names if n not in self.by_sha)))

    def on_branch(self, sha: str) -> bool:
        if sha in self.by_sha:
            return True
        if sha not in self._ancestry:
            self._ancestry[sha] = is_ancestor(self.live, sha, self.tip)
        return self._ancestry[sha]

    def explained(self, line: int) -> Emergency | None:
        """The first emergency_rollback after ``line``: it may have removed the commit."""
        return next((e for e in self.ledger.emergencies if e.line > line), None)

    def violation(self, kind: str, line: int | None, commit: str | None, message: str) -> None:
        self.out.violations.append(Violation(kind, line, commit, message))

    def named(self, line: int, what: str, name: str) -> str | None:
        """The full sha of the commit an event names, or None after recording why not."""
        full = self.out.resolved.get(name)
        if full is not None:
            return full
        if not _HEX.match(name):
            self.violation(
                "log",
                line,
                name or None,
                f"line {line}: {what} names commit {name!r}, which is not a commit id",
            )
            return None
        self.gone(line, what, name, "gone from live", "which does not exist in live")
        return None

    def gone(self, line: int, what: str, sha: str, explained: str, missing: str) -> None:
        """A commit an event names is gone: a note if an emergency rollback explains it."""
        emergency = self.explained(line)
        if emergency:
            self.out.removed[sha] = emergency.line
            self.out.notes.append(
                f"line {line}: {what} names commit {short(sha)}, {explained} since the "
                f"emergency_rollback at line {emergency.line}"
            )
        else:
            self.violation(
                "log", line, sha, f"line {line}: {what} names commit {short(sha)}, {missing}"
            )

    def off_branch(self, line: int, what: str, full: str, trailer: str) -> bool:
        """Report ``full`` if it is not a patchgate commit on the branch; True if it is not."""
        if full in self.by_sha:
            return False
        if self.on_branch(full):
            self.violation(
                "log",
                line,
                full,
                f"line {line}: {what} names commit {short(full)}, which is on "
                f"{self.branch} but has no {trailer} trailer",
            )
            return True
        self.gone(line, what, full, f"no longer on {self.branch}", f"which is not on {self.branch}")
        return True

    def check_applies(self) -> None:
        for ap in self.ledger.applies:
            what = f"apply event (patch {ap.patch_id})"
            full = self.named(ap.line, what, ap.commit)
            if full is None or self.off_branch(ap.line, what, full, trailers.PATCH_ID):
                continue
            commit = self.by_sha[full]
            if commit.patch_id is None:
                self.violation(
                    "log",
                    ap.line,
                    full,
                    f"line {ap.line}: {what} names commit {short(full)}, which is a "
                    f"rollback commit ({commit.rollback_id})",
                )
            elif commit.patch_id != ap.patch_id:
                self.violation(
                    "log",
                    ap.line,
                    full,
                    f"line {ap.line}: {what} names commit {short(full)}, whose "
                    f"{trailers.PATCH_ID} is {commit.patch_id}",
                )

    def check_rollbacks(self) -> None:
        for rb in self.ledger.rollbacks:
            what = f"rollback event ({rb.rollback_id or 'no rollback_id'}, patch {rb.patch_id})"
            full = self.named(rb.line, what, rb.revert_commit)
            if full is None or self.off_branch(rb.line, what, full, trailers.ROLLBACK_ID):
                continue
            commit = self.by_sha[full]
            reverted = self.out.resolved.get(rb.reverted_commit, rb.reverted_commit)
            if commit.rollback_id is None:
                self.violation(
                    "log",
                    rb.line,
                    full,
                    f"line {rb.line}: {what} names commit {short(full)}, which is a "
                    f"patch commit ({commit.patch_id}), not a revert",
                )
                continue
            if commit.rollback_id != rb.rollback_id:
                self.violation(
                    "log",
                    rb.line,
                    full,
                    f"line {rb.line}: {what} names commit {short(full)}, whose "
                    f"{trailers.ROLLBACK_ID} is {commit.rollback_id}",
                )
            claimed = commit.reverts  # None: reported as a trailer problem of the commit
            if claimed and not same_commit(self.out.resolved.get(claimed, claimed), reverted):
                self.violation(
                    "log",
                    rb.line,
                    full,
                    f"line {rb.line}: {what} says {short(full)} reverts "
                    f"{short(rb.reverted_commit)}, but {short(full)} reverts "
                    f"{short(claimed)}",
                )
            self.out.rolled_back.setdefault(reverted, (full, rb.rollback_id))

    def check_emergencies(self) -> None:
        for em in self.ledger.emergencies:
            what = "emergency_rollback event"
            full = self.named(em.line, what, em.last_good)
            if full is not None and not self.on_branch(full) and not self.explained(em.line):
                self.violation(
                    "log",
                    em.line,
                    full,
                    f"line {em.line}: {what} names last good commit {short(full)}, "
                    f"which is not on {self.branch}",
                )

    def check_commits(self) -> None:
        applied = self.out.applied = {self.out.resolved.get(a.commit) for a in self.ledger.applies}
        reverted = {self.out.resolved.get(r.revert_commit) for r in self.ledger.rollbacks}
        for commit in reversed(self.commits):  # oldest first
            if commit.problem:
                self.violation(
                    "history",
                    None,
                    commit.sha,
                    f"commit {short(commit.sha)} ({commit.label}): trailers do not "
                    f"parse: {commit.problem}",
                )
            if commit.rollback_id:
                if commit.reverts:
                    target = self.out.resolved.get(commit.reverts, commit.reverts)
                    self.out.rolled_back.setdefault(target, (commit.sha, commit.rollback_id))
                if commit.sha not in reverted:
                    self.violation(
                        "history",
                        None,
                        commit.sha,
                        f"commit {short(commit.sha)} ({commit.label}) has no "
                        "rollback event in the log",
                    )
            elif commit.sha not in applied:
                failed = self.ledger.unfinished.get(commit.sha)
                why = (
                    f" (its promotion failed at {failed[1]}, line {failed[0]}: finish it with "
                    "doit promote)"
                    if failed
                    else ""
                )
                self.violation(
                    "history",
                    None,
                    commit.sha,
                    f"commit {short(commit.sha)} ({commit.label}) has no apply event in the "
                    f"log{why}",
                )

    def run(self) -> CrossCheck:
        self.check_applies()
        self.check_rollbacks()
        self.check_emergencies()
        self.out.violations.sort(key=lambda v: v.line or 0)  # log side by line
        self.check_commits()
        return self.out


def cross_check(
    live: str, branch: str, tip: str, commits: list[Commit], ledger: Ledger
) -> CrossCheck:
    """Match history and log both ways (see the module docstring)."""
    return _Matcher(live, branch, tip, commits, ledger).run()


# --- the report ------------------------------------------------------------------------------


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
        state = ledger.patches[pid]
        ap: Apply | Rollback | None
        if state.rollback_of:
            ap = _landed_rollback(state, by_target)
            named, files = (ap.revert_commit, []) if ap else (None, [])
        else:
            ap = last_apply.get(pid)
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
        rows.append(row)
    return rows


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
        raise PatchgateError(STAGE, summary["REASON"])
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


def log_stat(root: str) -> list[int | str] | None:
    """What says the log changed: its identity, size and the sha256 of its bytes.

    A digest, not the mtime (issue 12: an in-place edit of the same length with the mtime put
    back was not seen). Hashing a 30 MB log: 0.15 s on a loaded 2-core machine.
    """
    path = provenance.log_path(root)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, digest]


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
        raise PatchgateError(RECORD_STAGE, f"which event? {RECORD_USAGE}")
    if kind not in provenance.EVENT_KINDS:
        raise PatchgateError(
            RECORD_STAGE,
            f"event={kind} is unknown; doit record writes emergency_rollback: {RECORD_USAGE}",
        )
    if kind != "emergency_rollback":
        raise PatchgateError(
            RECORD_STAGE,
            f"event={kind} is written by {_WRITTEN_BY[kind]}, "
            "never by hand; doit record writes emergency_rollback",
        )
    missing = [k for k in ("last_good", "reason", "operator") if not fields.get(k, "").strip()]
    if missing:
        given = " ".join(f"{k}=…" for k in missing)
        raise PatchgateError(RECORD_STAGE, f"emergency_rollback needs {given}: {RECORD_USAGE}")
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
            "event": "emergency_rollback",
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
    if rev.startswith("-"):
        raise bad
    done = git.run(
        live, "rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}", check=False
    )
    if done.returncode != 0:
        raise bad
    return done.output.strip()


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


def rollback_events(root: str) -> list[dict[str, Any]]:
    """The log's rollback events (lines without the word are not parsed: this is for display)."""
    try:
        with open(provenance.log_path(root), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    found = []
    for line in data.split(b"\n"):
        if b"rollback" in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "rollback":
                found.append(event)
    return found


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
    scores = propose.confidences(root)  # issue 14: a model's confidence in what it proposed
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


def walk_limited(live: str, tip: str, n: int) -> list[Commit]:
    infos = trailers.patchgate_commits(live, tip, limit=n)
    return [commit_of(info) for info in infos]


def landing_times(live: str, shas: Sequence[str]) -> dict[str, str]:
    """When each commit landed: its committer time (promote's commit-tree sets it), UTC."""
    if not shas:
        return {}
    done = git.run(live, "log", "--no-walk=unsorted", "--format=%H %ct", *shas, "--", stage=STAGE)
    times = {}
    for line in done.output.splitlines():
        sha, _, stamp = line.partition(" ")
        if stamp.strip().isdigit():
            when = datetime.fromtimestamp(int(stamp), UTC)
            times[sha] = when.strftime("%Y-%m-%d %H:%M:%S")
    return times


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


def parse_count(raw: str | None) -> int:
    text = (raw or str(DEFAULT_HISTORY)).strip()
    if not text.isdigit() or int(text) < 1:
        raise PatchgateError("PREFLIGHT", f"n={raw} must be a whole number of commits, e.g. n=20")
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
