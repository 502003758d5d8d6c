"""The promotion lock: one writer lands on live at a time (promote, finalize, recovery).

``patches/.state/promote.lock`` is held with ``fcntl.flock``: the kernel releases it when the
holder's last descriptor closes, so a holder killed with SIGKILL never blocks the next one. The
holder writes who it is into the file (pid, what, issue, since); a second promotion does not
wait: it fails at once and names the holder.

``acquire`` keeps the lock for the rest of the process (a doit run: load, verify, land, push,
finish); ``attempt`` takes it for a block and releases it (recovery from other commands).

Each issue has a lock of its own too (``hold_issue``, ``patches/.state/locks/ISSUE.lock``): one
command at a time works in an issue's workspace. Two verifications of one issue would apply
their patches in the same worktree, and one's gates would judge the other's tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from . import config, git, steps
from .errors import PatchgateError

LOCK_FILE = os.path.join("patches", ".state", "promote.lock")
# One per issue, never deleted: a lock file removed while held could be locked twice.
ISSUE_LOCKS = os.path.join("patches", ".state", "locks")

# lock file (absolute) -> descriptor holding it until this process exits.
_held: dict[str, int] = {}
# lock file (absolute) -> a descriptor doit's own process opened while loading (``share``).
_shared: dict[str, int] = {}


def lock_path(root: str) -> str:
    return os.path.join(os.path.abspath(root), LOCK_FILE)


def held(root: str) -> bool:
    return lock_path(root) in _held


def share(root: str) -> None:
    """Open the promotion lock's file in doit's own process, before any worker is forked.

    Under ``doit -P process`` a landing's setup task takes the lock in a worker, and doit ends
    a worker once nothing is left to hand it, maybe while the landing's last step still runs in
    another. A worker takes the lock through this descriptor (fork shares the open file, and a
    flock belongs to the open file), so the lock lasts until doit's own process exits. Opening
    an existing file writes nothing (loading stays side-effect free); on a first run there is
    no file yet and the worker opens its own.
    """
    path = lock_path(root)
    if path not in _shared:
        with contextlib.suppress(OSError):
            _shared[path] = os.open(path, os.O_RDWR | os.O_CLOEXEC)


def _open(root: str, path: str | None = None) -> int:
    path = path or lock_path(root)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise PatchgateError(
            "PREFLIGHT",
            f"cannot open the lock {os.path.relpath(path, root)} ({exc.strerror}): patches/ "
            "must be writable; make it writable (remount read-write, chattr -i) and retry",
        ) from exc


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _run_pid() -> int:
    """The doit run this process works for: its parent for a worker of ``doit -P process``
    (a landing's setup task takes the lock in the worker that runs it)."""
    return os.getppid() if multiprocessing.parent_process() is not None else os.getpid()


def _write_holder(fd: int, what: str, issue: str) -> None:
    info = {
        "pid": os.getpid(),
        "run": _run_pid(),
        "what": what,
        "issue": issue,
        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    data = json.dumps(info).encode()
    os.pwrite(fd, data, 0)  # then cut: the file is never empty for a reader in between
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def holder(root: str, path: str | None = None) -> dict[str, Any]:
    """Who wrote the lock file last (the holder, while the lock is held); {} if unreadable."""
    try:
        with open(path or lock_path(root), encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _live_holder(root: str, path: str | None = None, patience: float = 1.0) -> dict[str, Any]:
    """The holder's info, given it a moment to write it (it does so right after its flock)."""
    deadline = time.monotonic() + patience
    while True:
        info = holder(root, path)
        pid = info.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and steps.pid_alive(pid):
            return info
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.01)


def busy_message(root: str) -> str:
    info = _live_holder(root)
    where = os.path.relpath(lock_path(root), root)
    if not info.get("pid"):
        return f"another promotion holds the lock ({where}); wait for it to finish, then retry"
    return (
        f"another promotion is running: pid {info['pid']} ({info.get('what', '?')}, issue "
        f"{info.get('issue', '?')}, since {info.get('since', '?')}); wait for it to finish, "
        f"then retry (lock: {where})"
    )


def _parent_holds(root: str, path: str | None = None) -> bool:
    """The doit run this worker process works for holds the lock (doit -P process): in its
    main process, or in another worker of it."""
    info = holder(root, path)
    return os.getppid() in (info.get("pid"), info.get("run"))


def _hold(root: str, path: str, what: str, issue: str, busy: Callable[[], str]) -> int | None:
    """Take ``path``'s lock for the rest of this process, and write who holds it (first: a
    second command names us at once). None when this process, or the doit run it is a worker
    of, holds it already; a PREFLIGHT error saying ``busy()`` when anyone else does."""
    if path in _held:
        return None
    shared = _shared.get(path)
    fd = os.dup(shared) if shared is not None else _open(root, path)
    if not _try_flock(fd):
        os.close(fd)
        if _parent_holds(root, path):
            return None
        raise PatchgateError("PREFLIGHT", busy())
    _write_holder(fd, what, issue)
    _held[path] = fd
    return fd


def issue_busy_message(root: str, issue: str, path: str) -> str:
    info = _live_holder(root, path)
    who = (
        f"pid {info['pid']} ({info.get('what', '?')}, since {info.get('since', '?')})"
        if info.get("pid")
        else "another patchgate command"
    )
    return (
        f"issue {issue} is busy: {who} is working in its workspace; wait for it to "
        f"finish, then run this again (lock: {os.path.relpath(path, root)})"
    )


def hold_issue(root: str, issue: str, what: str) -> None:
    """Hold issue ``issue``'s lock until this process exits; fail fast naming the holder."""
    path = os.path.abspath(os.path.join(root, ISSUE_LOCKS, f"{issue}.lock"))
    _hold(root, path, what, issue, lambda: issue_busy_message(root, issue, path))


def acquire(root: str, issue: str, what: str) -> None:
    """Hold the lock until this process exits; fail fast naming the holder if it is taken.

    Whoever takes the lock writes live next: live's own index lock must be free too (else the
    landing would fail after its commit), and what dead writers left is swept first.
    """
    key, path = os.path.abspath(root), lock_path(root)
    if path in _held:
        return
    steps.require_writable(key)
    fd = _hold(key, path, what, issue, lambda: busy_message(key))
    if fd is None:
        return
    try:
        check_index_lock(key)
    except PatchgateError:
        del _held[path]
        fcntl.flock(fd, fcntl.LOCK_UN)  # a shared open file would keep it locked after close
        os.close(fd)
        raise
    steps.sweep_leftovers(key)


def index_lock_of(live: str) -> str | None:
    """The path of live's ``index.lock`` if it exists (git is writing live's index)."""
    dot_git = os.path.join(live, ".git")
    if os.path.isfile(dot_git):  # live is itself a worktree: ask git where its index is
        found = git.git_path(live, "index.lock")
        path = os.path.join(live, found) if found is not None else ""
    else:
        path = os.path.join(dot_git, "index.lock")
    return path if path and os.path.exists(path) else None


def check_index_lock(root: str) -> None:
    """Refuse while live's index is locked: by a git command still running, or a dead one's."""
    try:
        live = config.load(root, {}).live_repo
    except PatchgateError:
        return  # the command reports the configuration itself
    path = index_lock_of(live)
    if path is None:
        return
    raise PatchgateError(
        "PREFLIGHT",
        f"live's index is locked: {path} exists, so a git command is running in live or one "
        f"crashed; wait for it to finish, or if no git command is running there, delete it "
        f"(rm {path}) and retry — live was not changed",
    )


@contextlib.contextmanager
def attempt(root: str, what: str) -> Iterator[bool]:
    """Hold the lock for a block if nobody else does: yields False (and holds nothing) if busy."""
    key = os.path.abspath(root)
    if lock_path(key) in _held or _parent_holds(key):
        yield True
        return
    fd = _open(key)
    try:
        if not _try_flock(fd):
            yield False
            return
        _write_holder(fd, what, "-")
        yield True
    finally:
        os.close(fd)  # releases the flock


WORKTREES_LOCK = os.path.join("patches", ".state", "worktrees.lock")


@contextlib.contextmanager
def worktrees(root: str) -> Iterator[None]:
    """Hold the lock of live's worktree list for a block (waiting for it: the block is short).

    ``git worktree prune`` removes live's empty ``.git/worktrees`` folder, which a
    ``git worktree add`` of another issue running at the same moment is filling: the add then
    fails. Every prune and add patchgate makes takes this lock first.
    """
    path = os.path.join(os.path.abspath(root), WORKTREES_LOCK)
    fd = _open(root, path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock
