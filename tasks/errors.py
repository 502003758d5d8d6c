"""The one error type users see: its message says what happened and what to do."""

from __future__ import annotations


class PatchgateError(Exception):
    """A failure the user can fix. ``stage`` goes on the summary's STAGE line."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message

    def __str__(self) -> str:
        return self.message
