"""The history walk: the patchgate commits on live's branch, read from their trailers.

A patchgate commit has a ``Patchgate-Patch-Id`` or ``Patchgate-Rollback-Id`` trailer;
``commit_of`` reduces one to what the audit uses. ``check_history`` is incremental:
``audit/results/history-cache.json`` keeps the patchgate commits up to the tip audited last;
when that tip is an ancestor of the new one only the new commits are walked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from . import git, trailers
from .audit_ledger import HEX, RESULTS_DIR, STATE_VERSION, read_cache, write_cache
from .errors import PatchgateError

STAGE = "AUDIT"
HISTORY_CACHE = os.path.join(RESULTS_DIR, "history-cache.json")
_REVERTS_LINE = re.compile(r"^This reverts commit ([0-9a-f]{7,64})\b", re.MULTILINE)


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
    if reverts is not None and not HEX.match(reverts):
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
    return git.commit_messages(live, shas, STAGE)


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
    tip = git.branch_commit(live, branch)
    if tip is None:
        raise PatchgateError(
            "PREFLIGHT",
            f"branch {branch!r} does not exist in live repository {live}; "
            "set branch in patchgate.yaml to a branch of live",
        )
    return tip


def branch_name(live: str, branch: str | None) -> str:
    if branch:
        return branch
    name = git.branch_name(live)
    return name if name is not None else "HEAD"


def is_ancestor(live: str, commit: str, tip: str) -> bool:
    return git.is_ancestor(live, commit, tip)


def resolve(live: str, names: Iterable[str]) -> dict[str, str]:
    """Commit ids (full or abbreviated) to full shas, for those that are commits in live."""
    wanted = sorted({n for n in names if HEX.match(n)})
    if not wanted:
        return {}
    found = {}
    for name, (sha, kind) in zip(wanted, git.object_kinds(live, wanted, STAGE), strict=False):
        if kind == "commit":
            found[name] = sha
    return found


@dataclass
# --- the walk, cached up to the tip audited last ---------------------------------------------


class HistoryResult:
    commits: list[Commit]  # newest first
    walked: int
    incremental: bool
    previous_tip: str | None


def check_history(root: str, live: str, ref: str, tip: str) -> HistoryResult:
    """The branch's patchgate commits, walking only those added since the cached tip."""
    path = os.path.join(root, HISTORY_CACHE)
    data = read_cache(path)
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
    write_cache(
        path, {"version": STATE_VERSION, "live": live, "ref": ref, "tip": tip, "commits": commits}
    )
    return HistoryResult(commits, len(new), incremental, old)


def walk_limited(live: str, tip: str, n: int) -> list[Commit]:
    infos = trailers.patchgate_commits(live, tip, limit=n)
    return [commit_of(info) for info in infos]


def landing_times(live: str, shas: Sequence[str]) -> dict[str, str]:
    """When each commit landed: its committer time (promote's commit-tree sets it), UTC."""
    if not shas:
        return {}
    return {
        sha: datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        for sha, stamp in git.commit_times(live, shas, STAGE).items()
    }
