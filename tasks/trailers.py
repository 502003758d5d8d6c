"""Git commit trailers: written by promote and rollback, read back by audit and history.

A commit message is subject, body, then one paragraph of ``Key: value`` lines that
``git interpret-trailers --parse`` reads back exactly. Reading goes through git itself, so
what patchgate sees is what ``git log --format=%(trailers)`` shows anyone else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import git
from .errors import PatchgateError
from .proc import Completed

STAGE = "TRAILERS"

PATCH_ID = "Patchgate-Patch-Id"
ISSUE = "Patchgate-Issue"
BASE = "Patchgate-Base"
TRIGGER = "Patchgate-Trigger"
VERIFICATION = "Patchgate-Verification"
FILES = "Patchgate-Files"
OPERATOR = "Patchgate-Operator"
ROLLBACK_ID = "Patchgate-Rollback-Id"
REVERTS = "Patchgate-Reverts"
REASON = "Patchgate-Reason"
FAILURE_CONTEXT = "Patchgate-Failure-Context"
CO_AUTHORED_BY = "Co-authored-by"
# A commit carrying either of these was made by patchgate.
MARKER_KEYS = (PATCH_ID, ROLLBACK_ID)

# git's own trailer code reads and writes them (git.interpret_trailers, git.trailer_log, …),
# with the user's trailer.* configuration pinned (git.TRAILER_CONFIG).
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_LOG_CAP = 512 * 1024 * 1024
_ROLLBACK_ISSUE = re.compile(r"^rollback-([0-9a-f]{12})$")


def rollback_issue(sha: str) -> str:
    """The issue doit rollback verifies the revert of ``sha`` under (its Patchgate-Issue, its
    workspace, task names and state folder). Reserved: a patch may not use it."""
    return f"rollback-{sha[:12]}"


def rollback_target(issue: object) -> str | None:
    """The 12 hex digits of the commit whose rollback ``issue`` names, or None."""
    found = _ROLLBACK_ISSUE.match(issue) if isinstance(issue, str) else None
    return found.group(1) if found else None


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    trailers: dict[str, list[str]] = field(default_factory=dict)

    def first(self, key: str) -> str | None:
        """The first value of trailer ``key`` (case-insensitive, as git compares keys)."""
        for name, values in self.trailers.items():
            if name.lower() == key.lower() and values:
                return values[0]
        return None


def single_line(text: str) -> str:
    """``text`` with its line breaks replaced by spaces, trimmed: one trailer value."""
    return " ".join(text.splitlines()).strip()


def files_value(paths: Sequence[str]) -> str:
    """The Patchgate-Files value: repo paths, comma-separated."""
    return ", ".join(paths)


def split_files(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def verification_value(verdict: str, gates: Mapping[str, str]) -> str:
    """E.g. ``pass; gates: ruff=pass, mypy=pass, pytest=pass``; a gate the baseline excused is
    ``ruff=excused`` (issue 11), never ``pass``."""
    if not gates:
        return verdict
    return f"{verdict}; gates: " + ", ".join(f"{name}={v}" for name, v in gates.items())


def parse_verification(value: str) -> tuple[str, dict[str, str]]:
    """A Patchgate-Verification value back into (verdict, {gate: verdict})."""
    verdict, _, rest = value.partition(";")
    gates: dict[str, str] = {}
    listed = rest.strip()
    if listed.startswith("gates:"):
        for item in listed[len("gates:") :].split(","):
            name, sep, gate_verdict = item.strip().partition("=")
            if sep and name:
                gates[name] = gate_verdict.strip()
    return verdict.strip(), gates


def verdict_label(verdict: str, gates: Mapping[str, object]) -> str:
    """A verification's verdict as history and the audit show it: ``pass``, or with what the
    baseline excused (issue 11) ``pass (excused: ruff, mypy)``: never a plain pass for those."""
    excused = [name for name, v in gates.items() if v == "excused"]
    return f"{verdict} (excused: {', '.join(excused)})" if excused else verdict


def format_message(subject: str, body: str, trailers: Sequence[tuple[str, str]]) -> str:
    """A commit message whose last paragraph is exactly ``trailers`` (empty values left out).

    Commit it verbatim (``git commit -F - --cleanup=verbatim`` or ``whitespace``): the default
    cleanup of an edited message would strip body lines starting with "#".
    """
    lines = []
    for key, value in trailers:
        if not _KEY.match(key):
            raise ValueError(f"not a trailer key: {key!r}")
        flat = single_line(value)
        if flat:
            lines.append(f"{key}: {flat}")
    parts = [single_line(subject) or "patchgate", body.strip("\n").rstrip(), "\n".join(lines)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _parse_lines(text: str) -> dict[str, list[str]]:
    """``Key: value`` lines (git's unfolded trailer output) to key -> values, in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _git(done: Completed, what: str) -> Completed:
    """``done``, a git command of git.py's trailer functions, unless it did not finish."""
    if done.timed_out or done.truncated:
        raise PatchgateError(STAGE, f"{what} did not finish or printed too much; retry")
    return done


def _failed(done: Completed, what: str) -> PatchgateError:
    lines = done.output.strip().splitlines() or ["no output"]
    detail = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1])
    return PatchgateError(STAGE, f"{what} failed ({detail}); check the repository and the revision")


def parse_trailers(message: str) -> dict[str, list[str]]:
    """The trailers of ``message`` as ``git interpret-trailers --parse`` reads them.

    ``--no-divider`` because this is a commit message, not a patch mail: like ``git log``'s
    ``%(trailers)``, a "---" line in the body does not hide the trailers after it.
    """
    what = "git interpret-trailers"
    done = _git(git.interpret_trailers(message), what)
    if done.returncode != 0:
        raise _failed(done, what)
    return _parse_lines(done.output)


def commit_trailers(repo: str, sha: str) -> dict[str, list[str]]:
    """The trailers of commit ``sha`` in ``repo``."""
    _check_rev(sha)
    what = f"git log {sha}"
    done = _git(git.commit_message(repo, sha), what)
    if done.returncode != 0:
        raise _failed(done, what)
    return parse_trailers(done.output)


def _check_rev(rev: str) -> None:
    if not rev or rev.startswith("-"):
        raise PatchgateError(STAGE, f"{rev!r} is not a revision; give a commit or a range")


def _records(out: str) -> list[CommitInfo]:
    fields = out.split("\x00")
    return [
        CommitInfo(sha.strip(), subject, _parse_lines(trailers))
        for sha, subject, trailers in zip(fields[0::3], fields[1::3], fields[2::3], strict=False)
    ]


def _is_patchgate(info: CommitInfo, markers: Sequence[str] = MARKER_KEYS) -> bool:
    return any(info.first(key) for key in markers)


def patchgate_commits(
    repo: str,
    rev: str = "HEAD",
    limit: int | None = None,
    markers: Sequence[str] = MARKER_KEYS,
) -> list[CommitInfo]:
    """Commits reachable from ``rev`` (a commit or a range) made by patchgate, newest first.

    ``markers``: the marker trailers that count (default both; ``(ROLLBACK_ID,)``: rollbacks).

    One ``git log`` call: ``--grep`` keeps only messages with a marker line, then the parsed
    trailers confirm it (a body that merely quotes a marker is not enough). ``limit`` counts
    commits git matched, so in the rare case of quoted markers fewer may be returned.
    An unborn branch has no commits: [].
    """
    _check_rev(rev)
    done = _git(git.trailer_log(repo, rev, markers, limit, _LOG_CAP), f"git log {rev}")
    if done.returncode != 0:
        if rev == "HEAD" and _unborn(repo):
            return []
        raise _failed(done, f"git log {rev}")
    return [info for info in _records(done.output) if _is_patchgate(info, markers)]


def _unborn(repo: str) -> bool:
    """True when ``repo`` is a repository whose HEAD has no commit yet (failure path only)."""
    is_repo = _git(git.git_dir_probe(repo), "git rev-parse").returncode == 0
    has_head = _git(git.head_probe(repo), "git rev-parse")
    return is_repo and has_head.returncode != 0
