"""The audit after a promotion (issue 11, item 9; AM's post-success audit; docs/small-gaps.md).

After a landing, ``audit_command`` (if configured) and then — unless ``audit_after_promote`` is
false — ``doit audit``'s own check run in this process. A failure is kept in the promotion
record (``audit_failed``): a rerun of the same command audits again and is no SUCCESS until the
audit passes. Hooks: ``after_landing`` in a landing's finish, ``recheck`` where a rerun reports
a landing done before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from . import audit_report, report
from .errors import PatchgateError
from .steps import read_json, write_json

KEY = "audit_failed"  # in the promotion record: why the audit after it failed


def audit_live(root: str, live: str, branch: str | None, commit: str, push: str, log: str) -> None:
    """``doit audit``'s check now, in-process (its report in audit/results/ as usual)."""
    report.log(log, "audit: doit audit's check after the promotion")
    try:
        audit_report.audit(root, live, branch, log)
    except PatchgateError as err:
        raise PatchgateError(
            "AUDIT",
            f"the audit after the promotion failed: {err.message}; the commit {commit[:12]} "
            f"stays (push: {push}) — fix what it reports, then run doit audit "
            "(audit_after_promote: false turns this check off)",
        ) from None


def after_landing(
    record_path: str | None,
    command: Callable[[], None],
    enabled: bool,
    where: tuple[str, str, str | None],
    commit: str,
    push: str,
    log: str,
    redact: Callable[[str], str] = str,
) -> None:
    """``command`` (the audit_command), then the in-process audit if ``enabled``; ``where`` is
    (root, live, branch). A failure is written into the record at ``record_path`` (if there is
    one), then raised."""
    try:
        command()
        if enabled:
            audit_live(*where, commit, push, log)
    except PatchgateError as err:
        if record_path is not None and os.path.exists(record_path):
            record: dict[str, Any] = read_json(record_path)
            record[KEY] = redact(err.message)
            write_json(record_path, record)
        raise


def recheck(
    record_path: str,
    command: Callable[[], None],
    enabled: bool,
    where: tuple[str, str, str | None],
    log: str,
    redact: Callable[[str], str] = str,
) -> str | None:
    """A landing reported again: if the audit after it failed, audit again. None when there
    was nothing to do; a note when it passes now; PatchgateError("AUDIT") when it still fails."""
    record: dict[str, Any] = read_json(record_path)
    if not record.get(KEY):
        return None
    report.log(log, f"promote: the audit after it failed ({record[KEY]}); auditing again")
    after_landing(
        record_path, command, enabled, where, record["commit"], record["push"], log, redact
    )
    record = read_json(record_path)
    record.pop(KEY, None)
    write_json(record_path, record)
    return "the audit after it passes now"
