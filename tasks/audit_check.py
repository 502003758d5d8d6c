"""The cross-check: the ledger matched with the branch's history, both ways.

Every commit patchgate made (a ``Patchgate-Patch-Id`` or ``Patchgate-Rollback-Id`` trailer)
has its ``apply`` / ``rollback`` event, and every such event names a commit that exists, is on
the branch and says what the event says (patch id; for a revert, the commit it reverts).
Commits no longer on the branch are accepted only when a later ``emergency_rollback`` event
explains them. It runs in memory on the whole ledger and history each time: it is cheap next
to reading either. Findings are ``Violation`` records; what is explained is a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import trailers
from .audit_history import Commit, is_ancestor, resolve
from .audit_ledger import HEX, Emergency, Ledger, same_commit, short


class Violation(NamedTuple):
    kind: str  # chain | log | history
    line: int | None
    commit: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


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
        if not HEX.match(name):
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
