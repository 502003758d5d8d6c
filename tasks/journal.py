"""The promotion journal: a landing killed at any point leaves live entirely before or after.

Every landing on live (promote, finalize, rollback: ``promote.land_changes``) first writes
``patches/.state/promote-journal.json``, each path's pre-image and post-image, then replaces
the files one at a time, atomically and never through a link (``put``). ``recover``, which
commands call before they read or write live, undoes a landing that had not committed,
completes one that had, and otherwise stops with ``STAGE: RECOVER`` saying what to check.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any

from . import faults, git, lock, report
from .errors import PatchgateError
from .steps import STATE_DIR, now, read_json, sweep_leftovers, write_json

JOURNAL = os.path.join(STATE_DIR, "promote-journal.json")
JOURNAL_SCHEMA = "promote-journal.schema.json"
ABSENT = "absent"


def journal_path(root: str) -> str:
    return os.path.join(root, JOURNAL)


# --- files in live: never through a link, each replaced atomically ----------------------------


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_perm(mode: str) -> int:
    """The permissions git gives a checked-out file of this mode."""
    return (0o777 if mode == "100755" else 0o666) & ~_umask()


def parents_of(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]


def check_parents(live: str, rel: str, create: bool) -> None:
    """Every directory above ``rel`` in live is a real directory (missing ones are made)."""
    for prefix in parents_of(rel):
        full = os.path.join(live, prefix)
        try:
            mode = os.lstat(full).st_mode
        except FileNotFoundError:
            if not create:
                return
            os.mkdir(full)
            continue
        if stat.S_ISLNK(mode):
            raise PatchgateError(
                "PROMOTE",
                f"{prefix} is a symbolic link in live; patchgate never writes "
                f"through a link — make it a real directory or keep {rel} out of the patch",
            )
        if not stat.S_ISDIR(mode):
            raise PatchgateError(
                "PROMOTE",
                f"{prefix} is a file in live, but {rel} needs it to be a directory; "
                f"move that file in live or keep {rel} out of the patch",
            )


def missing_parents(live: str, rel: str) -> list[str]:
    return [p for p in parents_of(rel) if not os.path.lexists(os.path.join(live, p))]


def image_of(live: str, rel: str, write: bool = True) -> Any:
    """What ``rel`` is in live now: ABSENT, or its mode, blob id (stored in git) and perm."""
    full = os.path.join(live, rel)
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return ABSENT
    if stat.S_ISLNK(st.st_mode):
        data, mode = os.fsencode(os.readlink(full)), "120000"
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
        mode = "100755" if st.st_mode & 0o100 else "100644"
    else:
        raise PatchgateError(
            "PROMOTE", f"{rel} in live is a directory or a special file; move it away and retry"
        )
    blob = git.hash_blob(live, data, write, stage="PROMOTE")
    return {"mode": mode, "blob": blob, "perm": stat.S_IMODE(st.st_mode)}


def same_image(a: Any, b: Any) -> bool:
    if a == ABSENT or b == ABSENT:
        return bool(a == b)
    return bool(a["mode"] == b["mode"] and a["blob"] == b["blob"])


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(live: str, rel: str, pid: int) -> str:
    return os.path.join(live, os.path.dirname(rel), f".{os.path.basename(rel)}.pg{pid}.tmp")


def put(live: str, rel: str, image: Any) -> None:
    """Make ``rel`` in live be ``image``: a temporary file next to it, then os.replace."""
    full = os.path.join(live, rel)
    check_parents(live, rel, create=image != ABSENT)
    if image == ABSENT:
        if os.path.lexists(full):
            if stat.S_ISDIR(os.lstat(full).st_mode):
                raise PatchgateError("PROMOTE", f"{rel} is a directory in live; move it away")
            os.unlink(full)
        return
    data = git.blob_bytes(live, image["blob"])
    tmp = temp_name(live, rel, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    if image["mode"] == "120000":
        os.symlink(os.fsdecode(data), tmp)
    else:
        perm = image.get("perm")
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, default_perm(image["mode"]) if perm is None else perm)
            os.fsync(fd)
        finally:
            os.close(fd)
    faults.point(f"put-tmp:{rel}")
    os.replace(tmp, full)
    _fsync_dir(os.path.dirname(full))


def post_image(change: dict[str, Any]) -> Any:
    if change["status"] == "D":
        return ABSENT
    return {"mode": change["mode"], "blob": change["blob"]}


# --- the journal: a crash leaves live entirely before or entirely after ----------------------


def open_journal(
    root: str,
    live: str,
    branch: str,
    head: str,
    changes: list[dict[str, Any]],
    tree: str,
    kind: str,
    label: str,
    record_path: str,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Write the journal before the first byte of live changes: pre-images of every path."""
    path = journal_path(root)
    if os.path.exists(path):
        raise PatchgateError(
            "PROMOTE",
            f"{JOURNAL} exists: an interrupted promotion was not "
            "recovered; run doit promote again to recover it",
        )
    entries, created = [], []
    for change in changes:
        post = post_image(change)
        entries.append(
            {"path": change["path"], "pre": image_of(live, change["path"]), "post": post}
        )
        if post != ABSENT:
            created += [d for d in missing_parents(live, change["path"]) if d not in created]
    journal = {
        "version": 1,
        "kind": kind,
        "issue": label,
        "live": live,
        "branch": branch,
        "old_head": head,
        "tree": tree,
        "pid": os.getpid(),
        "started": now(),
        "phase": "copying",
        "commit": None,
        "created_dirs": created,
        "paths": entries,
        "record_path": record_path,
        "record": record,
    }
    write_json(path, journal, JOURNAL_SCHEMA)
    faults.point(f"{kind}-journaled")
    return journal


def undo(live: str, journal: dict[str, Any]) -> int:
    """Every journaled path back to its pre-image; directories the promotion made removed."""
    restored = 0
    for entry in journal["paths"]:
        tmp = temp_name(live, entry["path"], int(journal["pid"]))
        if os.path.lexists(tmp):
            os.unlink(tmp)
        now_image = image_of(live, entry["path"], write=False)
        pre = entry["pre"]
        if same_image(now_image, pre) and (
            pre == ABSENT
            or pre["mode"] == "120000"
            or stat.S_IMODE(os.lstat(os.path.join(live, entry["path"])).st_mode) == pre["perm"]
        ):
            continue
        put(live, entry["path"], pre)
        restored += 1
    for directory in reversed(journal["created_dirs"]):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(live, directory))
    return restored


def complete(root: str, live: str, journal: dict[str, Any], recovering: bool = False) -> None:
    """After the commit: live's index for those paths, the landing record, no journal.

    The index entries are set to the committed blobs (update-index --index-info: no refresh
    of the whole index); recovering, HEAD may have moved on, so they are reset to HEAD's.
    """
    paths = [e["path"] for e in journal["paths"]]
    if recovering:
        git.reset_paths(live, paths, stage="PROMOTE")
    else:
        lines = [
            f"0 {'0' * 40}\t{e['path']}"
            if e["post"] == ABSENT
            else f"{e['post']['mode']} {e['post']['blob']}\t{e['path']}"
            for e in journal["paths"]
        ]
        git.set_index_entries(live, lines, stage="PROMOTE")
    for entry in journal["paths"]:
        if entry["post"] == ABSENT:  # git leaves no empty directory behind; neither do we
            for directory in reversed(parents_of(entry["path"])):
                try:
                    os.rmdir(os.path.join(live, directory))
                except OSError:
                    break
    if journal.get("record_path"):
        write_json(
            journal["record_path"],
            {**journal["record"], "commit": journal["commit"], "landed_at": now()},
        )
    os.unlink(journal_path(root))


def recover(root: str) -> list[str]:
    """Finish or undo a promotion a crash interrupted; one line per thing done.

    Cheap when there is nothing to do (one stat). Call it before a command reads or writes
    live: every landing does, in the action of its setup task (``prepare``). While another
    promotion runs (the lock is taken) it does nothing: that promotion is not interrupted.
    Raises PatchgateError (stage RECOVER) when it cannot decide alone, saying what to check.
    """
    path = journal_path(root)
    if not os.path.exists(path):
        return []
    with lock.attempt(root, "recover") as mine:
        if not mine or not os.path.exists(path):
            return []
        try:
            journal = read_json(path)
            return [_resolve(root, journal)]
        except (KeyError, TypeError, ValueError) as exc:
            raise PatchgateError(
                "RECOVER",
                f"{JOURNAL} is unreadable ({exc}); compare live with its HEAD "
                "(git status), fix what is half done by hand, then delete the journal",
            ) from exc


def recover_first(root: str, log: str) -> None:
    """Before anything else: finish or undo a promotion a crash interrupted, and say so.

    Also removes what atomic writes of dead processes left (``steps.sweep_leftovers``).
    """
    for line in recover(root):
        print(f"recover: {line}", flush=True)
        report.try_log(log, f"recover: {line}")
    sweep_leftovers(root)


def task__recover() -> dict[str, Any]:
    """(internal) Before a command's first step runs: recover an interrupted landing."""
    # A setup task of every step (steps.step): it runs only when a step is about to execute,
    # so loading a task list (doit list, help) recovers nothing and writes nothing.
    root = os.getcwd()
    return {
        "actions": [(recover_first, [root, report.log_path(root, "recover")])],
        "uptodate": [False],
        "verbosity": 2,
    }


def _resolve(root: str, journal: dict[str, Any]) -> str:
    live, old, kind = journal["live"], journal["old_head"], journal["kind"]
    what = f"the interrupted {kind} of {journal['issue']}"
    head = git.head(live)
    if head == old:
        odd = [
            e["path"]
            for e in journal["paths"]
            if not any(
                same_image(image_of(live, e["path"], write=False), e[k]) for k in ("pre", "post")
            )
        ]
        if odd:
            raise PatchgateError(
                "RECOVER",
                f"{what} left {JOURNAL}, and {', '.join(odd)} changed since; their "
                "content before it is listed there (git cat-file -p BLOB): put it back by hand, "
                "then delete the journal",
            )
        count = undo(live, journal)
        faults.point("recover-undone")
        os.unlink(journal_path(root))
        return (
            f"recovered: {what} had not committed; live is back as it was before it "
            f"({count} path(s) restored)"
        )
    commit = journal.get("commit")
    if commit is None and git.first_parent(live, head) == old:
        commit = head
    if (
        commit
        and git.is_ancestor(live, commit, head)
        and git.tree_of(live, commit) == journal["tree"]
    ):
        journal["commit"] = commit
        complete(root, live, journal, recovering=True)
        then = {
            "promote": f"run doit promote issue={journal['issue']} to push and finish it",
            "rollback": "run the same doit rollback command (same confirm= token) to push and "
            "finish it",
        }.get(kind, "run doit finalize to push and finish it")
        return f"recovered: {what} had committed {commit[:12]}; {then}"
    raise PatchgateError(
        "RECOVER",
        f"{what} left {JOURNAL}, but live moved since (HEAD {head[:12]}, expected "
        f"{old[:12]} or its commit); check the paths listed there, then delete the journal",
    )


def check_copied(live: str, journal: dict[str, Any]) -> None:
    """Every journaled path in live is byte for byte its post-image (the verified blob)."""
    for entry in journal["paths"]:
        if not same_image(image_of(live, entry["path"], write=False), entry["post"]):
            raise PatchgateError(
                "PROMOTE",
                f"{entry['path']} in live is not the verified content after the "
                "copy; nothing was committed and live was restored — report this",
            )
