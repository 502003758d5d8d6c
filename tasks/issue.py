"""Issue ids: the name of one patch's lifecycle, its workspace folder and its task names."""

from __future__ import annotations

import re

from . import trailers
from .errors import PatchgateError

ISSUE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # matched whole: "$" allows a final "\n"


def check_issue(issue: str) -> None:
    if not ISSUE_ID.fullmatch(issue):
        raise PatchgateError(
            "PREFLIGHT",
            f"issue id {issue!r} may hold only letters, digits, '-', '_' and '.'; pass issue=ID",
        )
    if trailers.rollback_target(issue):
        # Promoting it would land a revert no operator confirmed.
        raise PatchgateError(
            "PREFLIGHT",
            f"issue id {issue!r} is reserved for doit rollback; pass another issue=ID "
            "(a rollback is confirmed and landed by doit rollback sha=S confirm=TOKEN)",
        )
