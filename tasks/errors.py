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


class PatchgateError(Exception):
    """A failure the user can fix. ``stage`` goes on the summary's STAGE line."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message

    def __str__(self) -> str:
        return self.message
