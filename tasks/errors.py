"""The one error type users see, and the stages its summary line names."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Where a command failed: the summary block's ``STAGE:`` (docs/failures.md lists each).

    A ``StrEnum``: a member is the string itself, so a stage read back from a file compares
    equal to it. A test checks that every stage the code names is one of these.
    """

    PREFLIGHT = "PREFLIGHT"
    CONFIG = "CONFIG"
    WORKSPACE = "WORKSPACE"
    APPLY = "APPLY"
    SCOPE = "SCOPE"
    GATES = "GATES"
    VERIFY = "VERIFY"
    ARCHIVE = "ARCHIVE"
    PROMOTE = "PROMOTE"
    LIVE_GATES = "LIVE_GATES"
    PUSH = "PUSH"
    FINISH = "FINISH"
    AUDIT = "AUDIT"
    RECOVER = "RECOVER"
    FINALIZE = "FINALIZE"
    ROLLBACK = "ROLLBACK"
    RECORD = "RECORD"
    HISTORY = "HISTORY"
    STATUS = "STATUS"
    DEMO = "DEMO"
    PROVENANCE = "PROVENANCE"
    TRAILERS = "TRAILERS"
    GIT = "GIT"
    INIT = "INIT"  # patchgate init (issue 11)
    PROPOSE = "PROPOSE"  # doit propose (issue 14): its own preflight
    LLM = "LLM"  # the model endpoint failed
    REPLY = "REPLY"  # the model's reply broke the contract after its re-asks
    REFINE = "REFINE"  # the attempts ran out or made no progress: an operator decides
    FORGE = "FORGE"  # the forge (issue 15)
    WATCH = "WATCH"  # doit watch
    UI = "UI"  # doit ui (issue 16)
    WORKER = "WORKER"  # a cluster worker died, crashed or refused (issue 17)
    INTERNAL = "INTERNAL"


def fix_of(message: str) -> str | None:
    """The fix a message gives: the part after its last "; " ("what happened; what to do")."""
    what, sep, fix = message.rpartition("; ")
    if not (sep and what and fix.strip()):
        return None
    return fix.strip()


class PatchgateError(Exception):
    """A failure the user can fix. ``stage`` goes on the summary's STAGE line.

    ``message`` is the whole REASON line, "what happened; what to do"; ``fix`` is the what-to-do
    part. Give it as ``fix=`` (then the message is ``f"{message}; {fix}"``), or, as most raise
    sites do, inside the message after its last "; ". tests/test_stages.py requires one at every
    raise site in tasks/.
    """

    def __init__(self, stage: str, message: str, fix: str | None = None) -> None:
        if fix:
            message = f"{message}; {fix}"
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.fix = fix or fix_of(message)

    def __str__(self) -> str:
        return self.message
