"""A command's load-time work as the action of a hidden setup task, for a delayed creator.

doit loads every task creator for every command (``doit list``, ``help``, ``status`` too), so a
creator only reads and declares. What a landing or a verification must do *before* its tasks can
be planned (the promotion lock, recovery of an interrupted landing, fetching and fast-forwarding
live, the jail probe) is the action of a hidden task ``_NAME``; the creator is decorated with
``doit.create_after(executed="_NAME")``. doit then runs it only when the command runs its tasks,
and only after ``_NAME`` ran (``doit list`` and ``help`` call it at once, before anything ran).

The action hands what the creator needs (the jail warning, the notes to show, the refusal)
over: in memory when it runs in doit's own process (the default runner), else (a worker of
``-P process``) in a record file ``patches/.state/prepared/NAME-PID.json`` keyed by the doit
process and stamped with a nonce of this run. The creator reads ``outcome(root, NAME)``; None
means nothing was prepared in this run (``doit list``, ``help``): declare a placeholder.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from doit import create_after

from . import lock
from .errors import PatchgateError
from .steps import STATE_DIR, pid_alive, read_json, unwritable, write_json

PREPARED = os.path.join(STATE_DIR, "prepared")
# This doit run: a record written by an earlier run under a reused pid never counts.
RUN = uuid.uuid4().hex
_RECORD = re.compile(r"^[a-z]+-(\d+)\.json$")
# What this process's setup tasks prepared (the default runner runs them here).
_OUTCOMES: dict[str, dict[str, Any]] = {}

Work = Callable[..., dict[str, Any]]


Creator = TypeVar("Creator", bound=Callable[..., Any])


def after(name: str) -> Callable[[Creator], Creator]:
    """``doit.create_after(executed="_NAME")`` on a creator (typed: doit has no annotations)."""
    decorate: Callable[[Creator], Creator] = create_after(executed=f"_{name}")
    return decorate


def record_path(root: str, name: str, pid: int) -> str:
    return os.path.join(root, PREPARED, f"{name}-{pid}.json")


def setup_task(name: str, work: Work, args: list[Any]) -> dict[str, Any]:
    """The hidden task ``_NAME``: ``work(*args)`` as its action, its result recorded."""
    root = os.getcwd()
    lock.share(root)  # a landing's lock taken in a worker of -P process lasts the whole run
    return {
        "basename": f"_{name}",
        "actions": [(run, [name, root, os.getpid(), RUN, work, *args])],
        "uptodate": [False],
        "verbosity": 2,
        "doc": f"(internal) what doit {name} does before its tasks are planned",
    }


def run(name: str, root: str, pid: int, nonce: str, work: Work, *args: Any) -> None:
    """Action of ``_NAME``: ``work``'s result, or its refusal, for the creator of this run.

    A ``PatchgateError`` (or a file that cannot be written) is recorded, not raised: the
    creator declares it as the refusing step, so its summary (stage, reason, exit code) is the
    one that step always gave.
    """
    try:
        data = work(*args)
    except PatchgateError as err:
        data = {"error": [err.stage, err.message]}
    except OSError as exc:
        data = {"error": ["PREFLIGHT", unwritable(exc)]}
    data = {**data, "run": nonce}
    if os.getpid() == pid:  # doit's own process: no file (patches/ may be read-only)
        _OUTCOMES[name] = data
        return
    path = record_path(root, name, pid)
    _sweep(os.path.dirname(path))
    write_json(path, data)


def outcome(root: str, name: str) -> dict[str, Any] | None:
    """What ``_NAME`` recorded in this run; None if it did not run (doit list, help, ...)."""
    data = _OUTCOMES.get(name)
    if data is None:
        try:
            data = read_json(record_path(root, name, os.getpid()))
        except (OSError, ValueError):
            return None
    return data if data is not None and data.get("run") == RUN else None


def error_of(data: dict[str, Any]) -> PatchgateError | None:
    """The refusal an outcome carries, if any."""
    if data.get("error"):
        stage, message = data["error"]
        return PatchgateError(str(stage), str(message))
    return None


def _sweep(folder: str) -> None:
    """Records of doit runs that ended (a record is read once, by its own run)."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            match = _RECORD.match(entry)
            if match and not pid_alive(int(match[1])):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, entry))
