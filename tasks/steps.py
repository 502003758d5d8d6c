"""Task plumbing shared by every lifecycle: a step is a doit subtask with one failure path."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from doit.exceptions import TaskFailed

from tasks import report
from tasks.errors import PatchgateError
from tasks.schema import validate

DEP_FILE = os.path.join("patches", ".state", "doit.sqlite3")

DOIT_CONFIG: dict[str, Any] = {
    "backend": "sqlite3",
    "dep_file": DEP_FILE,
    "reporter": report.SummaryReporter,
    "verbosity": 2,
    "continue": True,  # one patch's failure must not stop the others' chains
    "default_tasks": ["status"],
}

Action = Callable[..., Any]


class StepFailed(TaskFailed):  # type: ignore[misc]
    """A failed step that knows its stage (a gate failing in the final step is still GATES)."""

    def __init__(self, msg: str, stage: str) -> None:
        super().__init__(msg)
        self.stage = stage

    def __reduce__(self) -> tuple[Any, ...]:  # doit -P process sends failures between processes
        return (StepFailed, (self.message, self.stage))


FailureHook = Callable[[str, str, str], None]


def run_step(
    func: Action,
    log: str,
    stage: str,
    on_failure: FailureHook | None,
    *args: Any,
) -> Any:
    """Run one step's action; a PatchgateError becomes a failed task with a one-line reason."""
    try:
        result = func(*args)
    except PatchgateError as err:
        report.log(log, f"FAILED at {err.stage}: {err.message}")
        if on_failure is not None:
            on_failure(args[0], err.stage, err.message)
        return StepFailed(err.message, err.stage)
    return None if result is None else result


def step(
    group: str,
    name: str,
    func: Action,
    args: Sequence[Any],
    *,
    root: str,
    log: str,
    stage: str,
    doc: str,
    file_dep: Sequence[str] = (),
    targets: Sequence[str] = (),
    uptodate: Sequence[Any] = (),
    task_dep: Sequence[str] = (),
    on_failure: FailureHook | None = None,
    summary: str | None = None,
    before_first_step: tuple[Action, tuple[Any, ...]] | None = None,
    warning: str | None = None,
) -> dict[str, Any]:
    """A doit subtask dict: the action runs through run_step; meta tells the reporter who it is."""
    meta: dict[str, Any] = {"group": group, "root": root, "log": log, "stage": stage}
    if summary:
        meta["summary"] = summary
    if before_first_step:
        meta["before_first_step"] = before_first_step
    if warning:
        meta["warning"] = warning
    return {
        "name": name,
        "doc": doc,
        "actions": [(run_step, [func, log, stage, on_failure, *args])],
        "file_dep": list(file_dep),
        "targets": list(targets),
        "uptodate": list(uptodate),
        "task_dep": list(task_dep),
        "meta": meta,
        "verbosity": 2,
    }


def failed_creator(
    group: str, root: str, log: str, err: PatchgateError, name: str = "preflight"
) -> dict[str, Any]:
    """What a task creator yields when its input is bad: a step that fails with the message."""
    return step(
        group,
        name,
        _fail,
        [err.stage, err.message],
        root=root,
        log=log,
        stage=err.stage,
        doc="refuse bad input",
        uptodate=[False],
    )


def _fail(stage: str, message: str) -> None:
    raise PatchgateError(stage, message)


def write_json(path: str, data: Any, schema: str | None = None) -> None:
    """Write atomically: a reader never sees half a file, a crash leaves the old one."""
    if schema is not None:
        validate(data, schema, "INTERNAL", f"{os.path.basename(path)} does not match {schema}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
