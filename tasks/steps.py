"""Task plumbing shared by every lifecycle: a step is a doit subtask with one failure path."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from doit.exceptions import TaskFailed

from . import faults, report
from .errors import PatchgateError
from .schema import validate

STATE_DIR = os.path.join("patches", ".state")
# Free space below which a command refuses to start: doit's own state file (sqlite) must
# still be writable at the end of the run, or doit dies with a traceback after the summary.
MIN_FREE_BYTES = 1024 * 1024


def _dep_file() -> str:
    """doit's state file: patches/.state/doit.sqlite3, or a scratch one when patches/ is not
    writable, so doit starts and the command can refuse with one clear line (see
    ``require_writable``) instead of dying in doit's sqlite code."""
    default = os.path.join(STATE_DIR, "doit.sqlite3")
    if _unwritable(os.path.abspath(STATE_DIR)) is None:
        return default
    scratch = os.path.join(tempfile.gettempdir(), f"patchgate-readonly-{os.getuid()}")
    return os.path.join(scratch, "doit.sqlite3")


def _unwritable(folder: str) -> str | None:
    """Why ``folder`` (or the nearest existing folder above it) is not writable; None if it is."""
    probe = folder
    while not os.path.isdir(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    if os.access(probe, os.W_OK):
        return None
    try:  # ask the file system: access() does not see every reason (immutable, read-only)
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".patchgate-probe-")
    except OSError as exc:
        return exc.strerror or "not writable"
    os.close(fd)
    os.unlink(tmp)
    return None


DEP_FILE = _dep_file()

DOIT_CONFIG: dict[str, Any] = {
    "backend": "sqlite3",
    "dep_file": DEP_FILE,
    "reporter": report.SummaryReporter,
    "verbosity": 2,
    "continue": True,  # one patch's failure must not stop the others' chains
    "default_tasks": ["status"],
}

Action = Callable[..., Any]
# journal.task__recover: run before the first step that executes (a doit setup task).
RECOVER_TASK = "_recover"


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
    task: Any,
) -> Any:
    """Run one step's action; a PatchgateError becomes a failed task with a one-line reason.

    A file that cannot be written (disk full, read-only) is such an error too, at the step's
    stage. Ctrl-C stops the whole run quietly (exit 130): the reporter names the step it
    interrupted, and whatever the step changed is undone by its own ``finally`` blocks.
    """
    faults.point(f"step-before:{task.name}")
    try:
        result = func(*args)
    except PatchgateError as err:
        return step_failed(log, on_failure, args, err)
    except OSError as exc:
        return step_failed(log, on_failure, args, PatchgateError(stage, unwritable(exc)))
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # no traceback; doit still saves and reports
    faults.point(f"step-after:{task.name}")
    return None if result is None else result


def step_failed(
    log: str, on_failure: FailureHook | None, args: Sequence[Any], err: PatchgateError
) -> StepFailed:
    """Log the failure, run the failure hook; neither may hide the failure itself."""
    with contextlib.suppress(OSError):
        report.log(log, f"FAILED at {err.stage}: {err.message}")
    if on_failure is not None:
        try:
            on_failure(args[0], err.stage, err.message)
        except (OSError, PatchgateError) as exc:
            with contextlib.suppress(OSError):
                report.log(log, f"could not record the failure: {exc}")
    return StepFailed(err.message, err.stage)


def unwritable(exc: OSError) -> str:
    """One line for an OSError: what could not be done to which file, and what to do."""
    where = exc.filename or "a file"
    if isinstance(where, str) and os.path.isabs(where):
        with contextlib.suppress(ValueError):
            where = os.path.relpath(where)
    why = exc.strerror or str(exc)
    fixes = {
        errno.ENOSPC: "free some space there and run the same command again",
        errno.EDQUOT: "free some space there and run the same command again",
        errno.EROFS: "make it writable (remount read-write) and run the same command again",
        errno.EACCES: "make it writable and run the same command again",
        errno.EPERM: "make it writable (chattr -i?) and run the same command again",
    }
    fix = fixes.get(exc.errno or 0, "fix that and run the same command again")
    return f"could not write {where} ({why}); {fix}"


def require_writable(root: str) -> None:
    """Before a command that writes patches/: it must be writable and have some room."""
    patches = os.path.join(root, "patches")
    why = _unwritable(os.path.join(root, STATE_DIR))
    if why is None and os.path.isdir(patches):
        stats = os.statvfs(patches)
        free = stats.f_bavail * stats.f_frsize
        if free < MIN_FREE_BYTES:
            why = f"only {free // 1024} KiB free"
    if why is not None:
        raise PatchgateError(
            "PREFLIGHT",
            f"patches/ cannot be written ({why}): workspaces, logs and state live there; "
            "make it writable with free space (remount read-write, chattr -i, free some "
            "space) and run the same command again",
        )


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
        "setup": [RECOVER_TASK],
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
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        faults.point(f"json-tmp:{os.path.basename(path)}")
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # name the file the user knows, not the temporary one
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise


# Leftovers of atomic writes by a process that died before its rename: NAME.PID.tmp (write_json,
# zips, audit caches), NAME.PID (the config cache), promote-PID.index[.lock] (a private index).
LEFTOVER = re.compile(r"^(?:.+\.(?P<a>\d+)(?:\.tmp)?|promote-(?P<b>\d+)\.index(?:\.lock)?)$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers(root: str) -> list[str]:
    """Delete what atomic writes of dead processes left in patchgate's own folders.

    Only patchgate's state folders are looked at (never the inbox, never a worktree), and only
    files named after a process that no longer runs. Returns the paths removed.
    """
    folders = [os.path.join(root, STATE_DIR), os.path.join(root, "audit", "results")]
    for parent in ("promote", "promoted", "finalize", "rollback"):
        top = os.path.join(root, STATE_DIR, parent)
        folders += [os.path.join(top, d) for d in _listdir(top)]
    for parent in ("workspaces", "successful"):
        top = os.path.join(root, "patches", parent)
        for name in _listdir(top):
            folders += [os.path.join(top, name, sub) for sub in ("", "steps", "gates")]
    removed = []
    for folder in folders:
        for name in _listdir(folder):
            match = LEFTOVER.match(name)
            if match is None or pid_alive(int(match["a"] or match["b"])):
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                if os.path.isfile(path) or os.path.islink(path):
                    os.unlink(path)
                    removed.append(path)
    latest = os.path.join(root, "patches")
    for name in _listdir(latest):
        match = re.match(r"^latest\.log\.(\d+)\.tmp$", name)
        if match and not pid_alive(int(match[1])):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(latest, name))
                removed.append(os.path.join(latest, name))
    return removed


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def now() -> str:
    """The UTC time of a state record (started, landed_at, promoted_at …)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class NotReadable(Exception):
    """A file untrusted code could have written is not one patchgate reads; str() says why."""


class TooBig(NotReadable):
    """A regular file, but larger than patchgate reads."""


def read_untrusted(path: str, limit: int) -> bytes | None:
    """The bytes of a file a jailed step could have written; None when nothing is there.

    patchgate reads it outside the jail, so it is opened without following a symlink (a link
    to a host file is refused, not read) and without blocking (a FIFO cannot hang patchgate),
    and only a regular file of at most ``limit`` bytes is read; anything else raises
    NotReadable ("a symbolic link", "a FIFO", ...), or TooBig ("larger than 64 MiB").
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        kinds = {errno.ELOOP: "a symbolic link", errno.ENXIO: "a socket"}
        raise NotReadable(kinds.get(exc.errno or 0, exc.strerror or str(exc))) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a directory"}
            raise NotReadable(kinds.get(stat.S_IFMT(info.st_mode), "a device or socket"))
        too_big = TooBig(f"larger than {limit // (1024 * 1024)} MiB")
        if info.st_size > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # it may still grow after fstat: read at most limit + 1 bytes
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise too_big
    finally:
        os.close(fd)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
