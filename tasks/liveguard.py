"""The live guard: live must not change while a verification runs, but for patchgate's landings.

Before an issue's first step, ``capture_live`` records live's HEAD and status (the reporter
calls it through the chain's ``before_first_step``); untrusted code (the patch, a gate) runs
only after ``wait_live_capture``; after the chain, ``check_live_guard`` compares live with that
"before", excusing the HEAD moves and paths of patchgate's own landings meanwhile.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
import time
from typing import Any

from . import git
from .errors import PatchgateError
from .steps import read_json, write_json
from .workspace import Workspace

# --- the live guard's "before": live's HEAD and status when the verification started ---------

LIVE_GUARD = "live_guard.json"
_capturing: dict[str, threading.Thread] = {}


def capture_live(ws_dir: str, live_repo: str) -> None:
    """Before an issue's first step runs (the reporter calls it): live's HEAD and status.

    HEAD is read now; ``git status`` of live (an O(files) walk) runs on a thread while the
    first step starts, and lands in live_guard.json. Untrusted code (the patch, a gate) runs
    only after ``wait_live_capture``: the "before" never includes what the patch did.
    """
    path = os.path.join(ws_dir, LIVE_GUARD)
    head = git.head(live_repo)
    write_json(path, {"head": head, "status": None})

    def finish() -> None:
        data: dict[str, Any] = {"head": head}
        try:
            data["status"] = git.status(live_repo)
        except PatchgateError as exc:
            data.update(status=None, error=exc.message)
        with contextlib.suppress(OSError):
            write_json(path, data)

    thread = threading.Thread(target=finish, name=f"live-guard-{ws_dir}", daemon=True)
    _capturing[path] = thread
    thread.start()


def wait_live_capture(ws_dir: str, timeout: float = git.GIT_TIMEOUT) -> dict[str, Any] | None:
    """The captured "before" once complete; None if nothing was captured for this run."""
    path = os.path.join(ws_dir, LIVE_GUARD)
    thread = _capturing.pop(path, None)
    if thread is not None:  # captured by this very process
        thread.join(timeout)
    deadline = time.monotonic() + timeout
    while True:  # captured by doit's main process, this is a worker (-P process)
        try:
            data: dict[str, Any] = read_json(path)
        except (OSError, ValueError):
            return None
        if data.get("status") is not None or data.get("error"):
            return data
        if time.monotonic() > deadline:
            raise PatchgateError(
                "VERIFY",
                f"live's state before this verification was not captured within {timeout:.0f}s "
                f"({path}); run the same command again",
            )
        time.sleep(0.005)


# --- the check after the chain ----------------------------------------------------------------


def check_live_guard(ws: Workspace, live_repo: str) -> None:
    """Live must be as it was when this verification started, but for patchgate's own landings.

    The guard is a tripwire for a patch or a gate that reached live (jail: none, or a jail
    escape). A promotion (or finalize, or rollback) landing another patch on live meanwhile is
    no such thing: HEAD moves that live's reflog records as patchgate landings ("patchgate
    KIND: …", made under the promotion lock), or as the fast-forward to the remote that a
    promotion makes, are explained; so are the working-tree entries of the paths they changed.
    Everything else — another HEAD move, any other change to live's status — fails the run.
    """
    guard = ws.path(LIVE_GUARD)
    before = wait_live_capture(ws.dir)
    if before is None:
        return
    os.unlink(guard)
    if before.get("error"):
        raise PatchgateError(
            "VERIFY",
            f"live's state could not be read before this verification ({before['error']}); "
            "fix the live repository and verify again",
        )
    now_head, now_status = git.head(live_repo), git.status(live_repo)
    if (before["head"], before["status"]) == (now_head, now_status):
        return
    landed = landings_between(live_repo, before["head"], now_head)
    if landed is not None and (
        status_entries(before["status"], landed) == status_entries(now_status, landed)
    ):
        return
    tree = "changed" if before["status"] != now_status else "same"
    raise PatchgateError(
        "VERIFY",
        f"the live repository changed during verification (HEAD {before['head'][:12]} -> "
        f"{now_head[:12]}, working tree {tree}); find out what touched it before trusting "
        "this run",
    )


REFLOG_DEPTH = 200
FAST_FORWARD = re.compile(r"^merge [0-9a-f]{7,64}: Fast-forward$")


def landings_between(live: str, old: str, new: str) -> set[str] | None:
    """Paths changed by the patchgate landings that moved live's HEAD from ``old`` to ``new``.

    None when some move on the way is not a landing (or the reflog does not reach ``old``).
    """
    if old == new:
        return set()
    entries = git.head_moves(live, REFLOG_DEPTH)
    if not entries or entries[0][0] != new:
        return None
    for (sha, message), (older, _) in itertools.pairwise(entries):
        if sha == older:
            continue
        explained = message.startswith("patchgate ") or (
            FAST_FORWARD.match(message) is not None and from_remote(live, sha)
        )
        if not explained:
            return None
        if older == old:
            return git.changed_paths(live, old, new)
    return None


def from_remote(live: str, sha: str) -> bool:
    """Whether ``sha`` is on a remote-tracking branch: fetched, not made here."""
    return git.on_remote_branch(live, sha)


def status_entries(status: str, skip: set[str]) -> list[str]:
    """``git status --porcelain -z`` entries, but those of the paths in ``skip``."""
    fields = status.split("\0")
    out, i = [], 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        paths = [entry[3:]]
        if entry[0] in "RC" and i < len(fields):  # a rename: the old path follows
            paths.append(fields[i])
            i += 1
        if not any(p in skip for p in paths):
            out.append(entry)
    return sorted(out)
