"""The one place patchgate talks to git: argument tuples through proc.run, never a shell."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from . import proc
from .errors import PatchgateError

GIT_TIMEOUT = 120.0
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
GITLINK_MODE = "160000"  # a nested repository (or submodule) in a tree
# Before every git command patchgate runs: no hook runs (a relative core.hooksPath would run
# what a patch wrote, outside the jail, as the operator; live's own .git/hooks would run in
# verify and promote) and no fsmonitor command either (issue 12).
NO_HOOKS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


@dataclass(frozen=True)
class Change:
    """One path that differs between two trees: status A/M/D/T, new mode and blob id."""

    status: str
    path: str
    mode: str
    blob: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "status": self.status, "mode": self.mode, "blob": self.blob}


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = proc.clean_env(extra)
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


# Bytes of path arguments per git command: far below the kernel's limit on argv + environment
# (ARG_MAX, 2 MiB here), so 100,000 paths become a few commands instead of "Argument list too
# long" (issue 12).
ARGV_BUDGET = 256 * 1024


def run(
    repo: str,
    *args: str,
    check: bool = True,
    stage: str = "GIT",
    env: dict[str, str] | None = None,
    input_bytes: bytes | None = None,
    timeout: float = GIT_TIMEOUT,
) -> proc.Completed:
    """git ``args`` in ``repo``, hooks off; its output kept whole (it is data, never capped).

    Paths after a ``--`` that would not fit one command line are given in chunks, each its own
    git command (every command patchgate gives paths to treats each path on its own).
    """
    chunks = _path_chunks(args) if input_bytes is None else [args]
    if len(chunks) > 1:
        parts = [run(repo, *c, check=check, stage=stage, env=env, timeout=timeout) for c in chunks]
        failed = next((p for p in parts if p.returncode != 0), parts[-1])
        return proc.Completed(
            failed.argv,
            failed.returncode,
            "".join(p.output for p in parts),
            sum(p.duration for p in parts),
            timed_out=any(p.timed_out for p in parts),
        )
    # safe.directory: files written by the jail must not make git refuse the workspace.
    argv = ("git", *NO_HOOKS, "-c", f"safe.directory={repo}", "-C", repo, *args)
    done = proc.run(
        argv, env=env or git_env(), input_bytes=input_bytes, timeout=timeout, output_cap=None
    )
    if check and done.returncode != 0:
        first = next((ln for ln in done.output.splitlines() if ln.strip()), "no output")
        raise PatchgateError(stage, f"git {args[0]} failed in {repo}: {first.strip()}; see the log")
    return done


def _path_chunks(args: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``args`` split at its path list (after the first ``--``) into command lines that fit."""
    if "--" not in args or sum(len(a) + 1 for a in args) <= ARGV_BUDGET:
        return [args]
    cut = args.index("--") + 1
    head, paths = args[:cut], args[cut:]
    chunks: list[tuple[str, ...]] = []
    current: list[str] = []
    size = 0
    for path in paths:
        if current and size + len(path) + 1 > ARGV_BUDGET:
            chunks.append((*head, *current))
            current, size = [], 0
        current.append(path)
        size += len(path) + 1
    chunks.append((*head, *current))
    return chunks


def out(repo: str, *args: str, **kw: object) -> str:
    return run(repo, *args, **kw).output.strip()  # type: ignore[arg-type]


def live_head(path: str) -> str:
    """live's HEAD; a clear error when ``path`` is not a git repository with a commit.

    One git call on the happy path: this runs on every command, even a no-op rerun.
    """
    if not os.path.isdir(path):
        raise PatchgateError(
            "PREFLIGHT", f"live repository {path} does not exist; set live_repo in patchgate.yaml"
        )
    done = run(path, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
    if done.returncode == 0:
        return done.output.strip()
    if run(path, "rev-parse", "--git-dir", check=False).returncode != 0:
        raise PatchgateError(
            "PREFLIGHT",
            f"live repository {path} is not a git repository; run git init there "
            "or set live_repo in patchgate.yaml",
        )
    raise PatchgateError(
        "PREFLIGHT", f"live repository {path} has no commits; commit something first"
    )


def head(repo: str) -> str:
    return out(repo, "rev-parse", "HEAD")


def tree_of(repo: str, rev: str) -> str:
    return out(repo, "rev-parse", f"{rev}^{{tree}}")


def is_ancestor(repo: str, older: str, newer: str) -> bool:
    return run(repo, "merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def status(repo: str) -> str:
    """Porcelain status with untracked files: what a user would call the state of their tree."""
    # --no-optional-locks: looking must not rewrite the user's index.
    return run(
        repo, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all"
    ).output


def snapshot(repo: str, index: str) -> str:
    """The tree id of the working tree as it is (tracked + untracked, ignored files excluded).

    A private index file keeps the worktree's own index untouched; copying it first keeps
    git's stat cache so only modified files are hashed.
    """
    env = git_env({"GIT_INDEX_FILE": index})
    if not os.path.exists(index):  # the next snapshots of the worktree need no git dir
        own = os.path.join(repo, out(repo, "rev-parse", "--git-dir"), "index")
        if os.path.exists(own):
            # copy2 keeps the index file's mtime: git trusts an entry's stat only if the file
            # is older than the index (racy git). A copy stamped "now" would make git trust the
            # stat of a file rewritten within the same second, same size: a change the
            # snapshot misses.
            shutil.copy2(own, index)
    changed = check_file_sizes(repo, env)
    if not changed:
        return out(repo, "write-tree", env=env)  # the index already holds the worktree
    if len(changed) <= ADD_BY_NAME:
        # The listing is what `add -A` stages: naming it spares git a second walk of the
        # worktree (0.25 s at 20,000 files). Anything unusual (a path behind a symlink): the
        # whole walk below, which says what is wrong.
        named = {**env, "GIT_LITERAL_PATHSPECS": "1"}
        if run(repo, "add", "-A", "--", *sorted(changed), env=named, check=False).returncode == 0:
            return out(repo, "write-tree", env=env)
    try:
        run(repo, "add", "-A", "--", ".", env=env)
    except PatchgateError as err:
        # git cannot add a nested repository without a commit; say what it is, not git's words.
        empty = re.search(r"'(.+?)/?' does not have a commit checked out", err.message)
        if empty:
            raise PatchgateError("SCOPE", nested_repository(empty.group(1))) from None
        raise
    return out(repo, "write-tree", env=env)


# A file larger than this is refused before `git add` writes it into live's object database
# (shared by every workspace): a patch writing 1 GiB must not grow live's .git by 1 GiB.
# GitHub refuses files over 100 MB too. Issue 12.
MAX_FILE_BYTES = 100 * 1024 * 1024
# At most this many changed paths are staged by name (snapshot); past it, pathspec matching
# against every index entry costs more than git's own walk of the worktree.
ADD_BY_NAME = 256


def check_file_sizes(repo: str, env: dict[str, str]) -> set[str]:
    """PatchgateError("SCOPE") naming the largest new or modified file over MAX_FILE_BYTES.

    The paths it looked at: every new (not ignored), modified or deleted one.
    """
    listing = run(
        repo, "ls-files", "-z", "--others", "--modified", "--exclude-standard", env=env
    ).output
    changed = set(filter(None, listing.split("\0")))
    big = []
    for path in changed:
        with contextlib.suppress(OSError):
            info = os.lstat(os.path.join(repo, path))
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_FILE_BYTES:
                big.append((info.st_size, path))
    if big:
        size, path = max(big)
        raise PatchgateError(
            "SCOPE",
            f"{path} is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB a file of a "
            "patch may have; it was not stored: generate it at build time or keep it out of the "
            "repository",
        )
    return changed


def nested_repository(path: str) -> str:
    """Why a patch may not create a git repository inside the workspace (a gitlink)."""
    return (
        f"{path} is a git repository inside the workspace (it has its own .git): its files "
        "cannot be scoped, verified or promoted; the patch must not create one"
    )


def diff_trees(repo: str, old: str, new: str) -> list[Change]:
    """Paths that differ between two trees (no rename detection: a rename is D + A).

    The whole list or an error: git's output is never capped, and a record that does not
    parse (a cut or garbled listing) is refused, never skipped.
    """
    raw = run(repo, "diff-tree", "-r", "-z", "--no-renames", old, new).output
    return parse_raw_diff(raw, f"{old}..{new} in {repo}")


def parse_raw_diff(raw: str, what: str) -> list[Change]:
    """``git diff-tree -r -z`` output as Changes; PatchgateError unless every record parses."""
    if not raw:
        return []
    fields = raw.split("\0")
    if fields[-1] != "" or len(fields) % 2 != 1:
        raise PatchgateError("GIT", f"the change list of {what} is cut short; verify again")
    changes = []
    for meta, path in zip(fields[0:-1:2], fields[1:-1:2], strict=True):
        parts = meta[1:].split(" ")
        if not meta.startswith(":") or len(parts) != 5 or not path:
            raise PatchgateError(
                "GIT", f"the change list of {what} has a record git does not write; verify again"
            )
        if "\ufffd" in path:  # bytes that are not UTF-8, decoded as U+FFFD: not the tree's name
            raise PatchgateError(
                "SCOPE",
                f"the file name {path!r} is not UTF-8; patchgate cannot scope or land it under "
                "its real name: give it a UTF-8 name",
            )
        _, new_mode, _, new_blob, status = parts
        changes.append(Change(status, path, new_mode, new_blob))
    return changes


def restore(repo: str, base: str, tree: str | None = None) -> None:
    """Put the worktree at ``base`` exactly (ignored files too), then lay ``tree`` over it.

    What ``reset --hard base`` + ``clean -ffdx`` do; when HEAD and the index are already at
    ``base`` (a workspace between two attempts), one status walk finds what the attempt
    changed and only that is put back: a 20,000-file worktree is not read three times.
    For patchgate's own worktrees only: it deletes ignored files too.
    """
    if not _undo_changes(repo, base):
        run(repo, "reset", "-q", "--hard", base)
        # -ff: a repository a patch nested in it goes too; -x: what it wrote that git ignores.
        run(repo, "clean", "-q", "-ffdx")
    if tree is not None:
        overlay(repo, tree_of(repo, base), tree)


def _undo_changes(repo: str, base: str) -> bool:
    """reset --hard + clean -ffdx for a worktree whose HEAD is ``base`` and index clean; False
    (and nothing done) when that is not the case or anything is unusual."""
    heads = run(repo, "rev-parse", "HEAD", base, check=False)
    lines = heads.output.split()
    if heads.returncode != 0 or len(lines) != 2 or lines[0] != lines[1]:
        return False
    done = run(
        repo,
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=normal",
        "--ignored",
        "--no-renames",
        "--ignore-submodules",
        check=False,
    )
    if done.returncode != 0:
        return False
    modified, untracked = [], []
    for entry in (e for e in done.output.split("\0") if e):
        code, path = entry[:2], entry[3:]
        if code in ("??", "!!"):
            untracked.append(path)
        elif code[0] == " " and code[1] in "MDT":
            modified.append(path)
        else:
            return False  # staged or unmerged: the slow, general way
    if untracked:
        # Pathspecs keep clean from walking the whole tree; past a few hundred, walk it.
        which = ("--", *untracked) if len(untracked) <= 256 else ()
        if run(repo, "--literal-pathspecs", "clean", "-q", "-ffdx", *which, check=False).returncode:
            return False
    if modified:
        paths = "\0".join(modified) + "\0"
        checkout = ("checkout-index", "-f", "-q", "-z", "--stdin")
        if run(repo, *checkout, input_bytes=paths.encode(), check=False).returncode:
            return False
    return True


def converted(repo: str, changes: Sequence[Change]) -> list[str]:
    """Changed files whose bytes on disk are not the blob git stored (a .gitattributes filter,
    working-tree-encoding or ident conversion): the gates test the disk, the blob lands.

    A CRLF -> LF conversion alone (``eol=crlf``, as a checkout of the file writes it) is not
    one: the lines are the same.
    """
    files = [c for c in changes if c.status != "D" and c.mode in ("100644", "100755")]
    found: list[Change] = []
    for start in range(0, len(files), 500):  # argv stays far below the system's limit
        chunk = files[start : start + 500]
        ids = out(repo, "hash-object", "--no-filters", "--", *(c.path for c in chunk)).split()
        found += [c for c, blob in zip(chunk, ids, strict=True) if blob != c.blob]
    return [c.path for c in found if not _eol_only(os.path.join(repo, c.path), c.blob)]


def _eol_only(path: str, blob: str) -> bool:
    with open(path, "rb") as fh:
        data = fh.read().replace(b"\r\n", b"\n")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob


def remove_ignored(repo: str) -> list[str]:
    """Delete what git ignores from a worktree (a patch's byproducts, e.g. a planted .pyc): it
    is not in the patch's tree, so it must not sway a gate either. The paths removed."""
    done = run(repo, "clean", "-ffdX")
    return [ln.removeprefix("Removing ") for ln in done.output.splitlines() if ln.strip()]


def overlay(repo: str, old: str, new: str, skip: Sequence[str] = ()) -> list[Change]:
    """Write into the worktree what differs from tree ``old`` to tree ``new`` (but ``skip``)."""
    changes = [c for c in diff_trees(repo, old, new) if c.path not in skip]
    for c in changes:
        if c.status == "D":
            os.unlink(os.path.join(repo, c.path))
    present = [c.path for c in changes if c.status != "D"]
    if present:
        # checkout writes the files (links as links) and stages them; reset unstages again.
        run(repo, "checkout", new, "--", *present)
        run(repo, "reset", "-q", "--", *present)
    return changes


def _cat_file(repo: str, args: Sequence[str], what: str, stdin: bytes | None = None) -> bytes:
    # proc.run decodes text; blobs are bytes, so these reads talk to git directly.
    done = subprocess.run(
        ("git", *NO_HOOKS, "-C", repo, "cat-file", *args),
        input=stdin,
        env=git_env(),
        capture_output=True,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise PatchgateError(
            "GIT", f"git cat-file could not read {what} in {repo}; check it with git fsck"
        )
    return done.stdout


def blob_bytes(repo: str, blob: str) -> bytes:
    return _cat_file(repo, ("blob", blob), f"blob {blob}")


def tree_files(repo: str, commit: str) -> list[tuple[str, str, bytes]]:
    """Every file of ``commit``, (path, mode, bytes), from git's objects: one ``cat-file --batch``
    for all of them. Submodules (commits, not blobs) have no bytes here and are left out."""
    listing = out(repo, "ls-tree", "-r", "-z", "--full-tree", commit)
    files = []
    for record in filter(None, listing.split("\0")):
        meta, path = record.split("\t", 1)
        mode, kind, blob = meta.split(" ")
        if kind == "blob":
            files.append((path, mode, blob))
    wanted = "".join(f"{blob}\n" for _, _, blob in files).encode()
    data = _cat_file(repo, ("--batch",), f"the files of {commit}", wanted)
    at, result = 0, []
    for path, mode, _ in files:
        header_end = data.index(b"\n", at)
        size = int(data[at:header_end].split()[2])
        result.append((path, mode, data[header_end + 1 : header_end + 1 + size]))
        at = header_end + 1 + size + 1  # the blob, then a newline
    return result


# --- named commands: every git command a lifecycle runs is one of these -----------------------


def branch_name(repo: str) -> str | None:
    """The branch HEAD is on; None on a detached HEAD."""
    done = run(repo, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    return done.output.strip() if done.returncode == 0 else None


def remote_url(repo: str, remote: str) -> str | None:
    """The URL of ``remote``; None when there is no such remote."""
    done = run(repo, "remote", "get-url", remote, check=False)
    return done.output.strip() if done.returncode == 0 else None


def rev_parse(repo: str, rev: str) -> str:
    return out(repo, "rev-parse", rev)


def commit_of(repo: str, rev: str) -> str | None:
    """The full id of commit ``rev`` (never read as an option); None if there is none."""
    if not rev or rev.startswith("-"):
        return None
    done = run(
        repo, "rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}", check=False
    )
    return done.output.strip() if done.returncode == 0 else None


def parents(repo: str, sha: str) -> list[str]:
    return out(repo, "rev-list", "--parents", "-n", "1", sha).split()[1:]


def first_parent(repo: str, sha: str) -> str | None:
    """The first parent of commit ``sha``; None for a root commit (or no such commit)."""
    done = run(repo, "rev-parse", "--verify", "-q", f"{sha}^", check=False)
    return done.output.strip() if done.returncode == 0 else None


def count_between(repo: str, older: str, newer: str) -> int:
    """How many commits ``newer`` has that ``older`` has not."""
    return int(out(repo, "rev-list", "--count", f"{older}..{newer}"))


def subject_and_message(repo: str, sha: str) -> tuple[str, str]:
    subject, _, body = run(repo, "log", "-1", "--format=%s%x00%B", sha).output.partition("\0")
    return subject.strip(), body


def objects_dir(repo: str) -> str:
    """The absolute path of the repository's object database."""
    return out(repo, "rev-parse", "--path-format=absolute", "--git-path", "objects")


def tracked_paths(repo: str, rev: str) -> set[str]:
    """Every file path in commit ``rev``'s tree."""
    return set(out(repo, "ls-tree", "-r", "--name-only", "-z", rev).split("\0")) - {""}


def show_file(repo: str, rev: str, path: str, stage: str = "GIT") -> str:
    """The content of ``path`` in commit ``rev``, as text."""
    return run(repo, "show", f"{rev}:{path}", stage=stage).output


def git_path(repo: str, name: str) -> str | None:
    """``git rev-parse --git-path NAME`` (relative to ``repo``, or absolute); None on failure."""
    done = run(repo, "rev-parse", "--git-path", name, check=False)
    return done.output.strip() if done.returncode == 0 else None


def short_log(repo: str, revs: str, paths: Sequence[str], limit: int) -> list[str]:
    """``abbreviated-sha subject`` of the commits of ``revs`` that changed ``paths``, newest
    first, at most ``limit``."""
    return out(
        repo, "log", f"--max-count={limit}", "--format=%h %s", revs, "--", *paths
    ).splitlines()


# --- live's index and objects around a landing (journal.py) -----------------------------------


def hash_blob(repo: str, data: bytes, write: bool, stage: str = "GIT") -> str:
    """The blob id of ``data``; ``write``: stored in ``repo``'s object database too."""
    args = ("hash-object", "-w", "--stdin") if write else ("hash-object", "--stdin")
    return run(repo, *args, input_bytes=data, stage=stage).output.strip().splitlines()[-1]


def reset_paths(repo: str, paths: Sequence[str], stage: str = "GIT") -> None:
    """The index entries of ``paths`` (taken literally) back to HEAD's."""
    run(repo, "--literal-pathspecs", "reset", "-q", "--", *paths, stage=stage)


def set_index_entries(repo: str, lines: Sequence[str], stage: str = "GIT") -> None:
    """``git update-index -z --index-info`` of ``lines`` (``MODE BLOB\tPATH``; mode 0 removes)."""
    data = ("\0".join(lines) + "\0").encode()
    run(repo, "update-index", "-z", "--index-info", input_bytes=data, stage=stage)


# --- read by the operator console (ui/records.py) ---------------------------------------------


def diff_text(repo: str, old: str, new: str) -> str | None:
    """``git diff`` of ``old`` -> ``new`` as a reader sees it (no color, no external diff);
    None when git cannot make it."""
    done = run(repo, "diff", "--no-color", "--no-ext-diff", old, new, check=False)
    return done.output if done.returncode == 0 else None


def commit_summaries(repo: str, shas: Sequence[str], stage: str = "GIT") -> list[list[str]]:
    """[sha, commit time (Unix seconds), subject] of each of ``shas``, in one call: git's -z
    records split at their field separator, as they come (keep those with three fields)."""
    done = run(
        repo,
        "log",
        "--no-walk=unsorted",
        "-z",
        "--format=%H%x1f%ct%x1f%s",
        *shas,
        "--",
        stage=stage,
        check=False,
    )
    return [record.strip("\n").split("\x1f") for record in done.output.split("\x00")]


# --- a new repository (the demo project, demo.py) ---------------------------------------------


def init_bare(path: str, branch: str) -> None:
    """A new bare repository at ``path`` whose HEAD is ``branch``."""
    run(os.path.dirname(path) or ".", "init", "-q", "--bare", "-b", branch, path)


def publish_first_commit(
    repo: str, remote: str, branch: str, author: tuple[str, str], message: str, stage: str
) -> None:
    """Make the folder ``repo`` a repository holding all its files as one commit on ``branch``
    by ``author`` (name, email), no automatic gc, pushed to ``remote`` as origin."""
    name, email = author
    for args in (
        ("init", "-q", "-b", branch),
        ("config", "user.name", name),
        ("config", "user.email", email),
        ("config", "gc.auto", "0"),
        ("add", "-A"),
        ("commit", "-q", "-m", message),
        ("remote", "add", "origin", remote),
        ("push", "-q", "origin", branch),
    ):
        run(repo, *args, stage=stage)


# --- patchgate init (init.py) ------------------------------------------------------------------


def toplevel(folder: str) -> str | None:
    """The top folder of the repository ``folder`` is in, as git gives it; None outside one."""
    done = run(folder, "rev-parse", "--show-toplevel", check=False)
    return done.output.strip() if done.returncode == 0 else None


# --- a workspace's worktree of live (workspace.py) --------------------------------------------


def checkout_detached(repo: str, commit: str, stage: str) -> None:
    """Check ``commit`` out in ``repo`` on a detached HEAD."""
    run(repo, "checkout", "-q", "--detach", commit, stage=stage)


def prune_worktrees(repo: str, stage: str) -> None:
    """Forget the worktrees of ``repo`` whose folders are gone."""
    run(repo, "worktree", "prune", stage=stage)


def add_worktree(repo: str, path: str, commit: str, stage: str) -> None:
    """A new worktree of ``repo`` at ``path`` with ``commit`` on a detached HEAD."""
    run(repo, "worktree", "add", "-q", "--detach", path, commit, stage=stage)


# --- a gate's rewritten files laid over a tree (gates.py) -------------------------------------


def tree_with_entries(
    repo: str, index: str, tree: str, entries: Sequence[tuple[str, str, str]], stage: str
) -> str:
    """The tree id of ``tree`` with ``entries`` (mode, blob, path) written over it, built in
    the private index file ``index`` (the caller removes it)."""
    env = git_env({"GIT_INDEX_FILE": index})
    run(repo, "read-tree", tree, env=env, stage=stage)
    for mode, blob, path in entries:
        cacheinfo = f"{mode},{blob},{path}"
        run(repo, "update-index", "--add", "--cacheinfo", cacheinfo, env=env, stage=stage)
    return out(repo, "write-tree", env=env, stage=stage)


# --- the audit's walk of live's history (audit_history.py) ------------------------------------


def branch_commit(repo: str, branch: str) -> str | None:
    """The commit the local branch ``branch`` points at; None when there is no such branch."""
    done = run(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", check=False)
    return done.output.strip() if done.returncode == 0 else None


def commit_messages(repo: str, shas: Sequence[str], stage: str) -> dict[str, str]:
    """The full message (``%B``) of each of the existing commits ``shas``, in one call."""
    done = run(
        repo, "log", "--no-walk=unsorted", "-z", "--format=%H%x00%B", *shas, "--", stage=stage
    )
    fields = done.output.split("\x00")
    return {sha.strip(): body for sha, body in zip(fields[0::2], fields[1::2], strict=False)}


def object_kinds(repo: str, names: Sequence[str], stage: str) -> list[tuple[str, str]]:
    """(object id, type) of each of ``names`` in order, as ``git cat-file --batch-check``
    answers (a name that is no object: (name, "missing"))."""
    done = run(
        repo,
        "cat-file",
        "--batch-check=%(objectname) %(objecttype)",
        input_bytes="".join(f"{n}\n" for n in names).encode(),
        stage=stage,
    )
    return [(sha, kind) for sha, _, kind in (ln.partition(" ") for ln in done.output.splitlines())]


def commit_times(repo: str, shas: Sequence[str], stage: str) -> dict[str, int]:
    """The committer time (Unix seconds) of each of the existing commits ``shas``."""
    done = run(repo, "log", "--no-walk=unsorted", "--format=%H %ct", *shas, "--", stage=stage)
    times = {}
    for line in done.output.splitlines():
        sha, _, stamp = line.partition(" ")
        if stamp.strip().isdigit():
            times[sha] = int(stamp)
    return times


# --- what moved live's HEAD (the live guard, liveguard.py) -------------------------------------


def head_moves(repo: str, depth: int) -> list[tuple[str, str]] | None:
    """HEAD's reflog, newest first, at most ``depth`` entries: (commit, what moved HEAD there).
    None when git cannot read it."""
    done = run(repo, "log", "-g", f"-n{depth}", "--format=%H %gs", "HEAD", "--", check=False)
    if done.returncode != 0:
        return None
    pairs = (ln.split(" ", 1) for ln in done.output.splitlines() if " " in ln)
    return [(sha, message) for sha, message in pairs]


def changed_paths(repo: str, old: str, new: str) -> set[str]:
    """The paths that differ between commits (or trees) ``old`` and ``new``; renames as two."""
    moved = out(repo, "diff", "--name-only", "-z", "--no-renames", old, new)
    return set(moved.split("\0")) - {""}


def on_remote_branch(repo: str, sha: str) -> bool:
    """Whether ``sha`` is on a remote-tracking branch (fetched, not made here)."""
    done = run(repo, "branch", "-r", "--contains", sha, "--format=%(refname)", check=False)
    return done.returncode == 0 and bool(done.output.strip())


# --- a revert computed in a scratch index and object directory (revertplan.py) -----------------
# ``env`` points GIT_INDEX_FILE and GIT_OBJECT_DIRECTORY at the scratch: live's are only read.


def diff_tree_to_file(
    repo: str, old: str, new: str, output: str, flags: Sequence[str], env: dict[str, str]
) -> None:
    """``git diff-tree`` ``old`` -> ``new`` with ``flags``, written to the file ``output``."""
    run(repo, "diff-tree", *flags, f"--output={output}", old, new, env=env)


def read_tree(repo: str, tree: str, env: dict[str, str]) -> None:
    run(repo, "read-tree", tree, env=env)


def apply_cached_3way(repo: str, diff: str, env: dict[str, str]) -> proc.Completed:
    """``git apply --cached --3way`` of the file ``diff`` to the index; the caller reads it."""
    return run(
        repo, "apply", "--cached", "--3way", "--whitespace=nowarn", diff, check=False, env=env
    )


def write_tree(repo: str, env: dict[str, str] | None = None) -> str:
    return out(repo, "write-tree", env=env)


def tree_diff_names(repo: str, old: str, new: str, env: dict[str, str] | None = None) -> list[str]:
    """The paths that differ between ``old`` and ``new`` (no renames), sorted."""
    names = run(
        repo, "diff-tree", "-r", "-z", "--name-only", "--no-renames", old, new, env=env
    ).output
    return sorted(n for n in names.split("\0") if n)


def tree_diff_stat(repo: str, old: str, new: str, env: dict[str, str]) -> list[str]:
    """``git diff-tree --stat`` of ``old`` -> ``new``, its non-empty lines."""
    stat = run(
        repo, "diff-tree", "-r", "--stat=100", "--no-renames", "--no-color", old, new, env=env
    ).output
    return [ln.rstrip() for ln in stat.splitlines() if ln.strip()]


def log_touching(repo: str, revs: str, paths: Sequence[str], limit: int) -> str:
    """``git log`` of ``revs`` limited to ``paths`` (literally): per commit, a NUL, ``SHA
    subject`` and the paths it changed (no renames), one a line; at most ``limit`` commits."""
    return run(
        repo,
        "--literal-pathspecs",
        "log",
        "--no-renames",
        "--name-only",
        f"--max-count={limit}",
        "--format=%x00%H %s",
        revs,
        "--",
        *paths,
    ).output


# --- moving a base commit to a cluster worker (cluster.py) ------------------------------------


def bundle_commit(live: str, shadow: str, commit: str, ref: str, bundle: str, stage: str) -> None:
    """Write the git bundle file ``bundle`` holding ``commit`` as ``ref``.

    Made in ``shadow`` (an empty folder) as a bare repository that borrows live's objects
    (alternates), so live gets no ref and no lock of ours.
    """
    run(shadow, "init", "-q", "--bare", stage=stage)
    objects = os.path.join(live, out(live, "rev-parse", "--git-common-dir"), "objects")
    with open(os.path.join(shadow, "objects", "info", "alternates"), "w") as fh:
        fh.write(os.path.abspath(objects) + "\n")
    run(shadow, "update-ref", ref, commit, stage=stage)
    run(shadow, "bundle", "create", "-q", bundle, ref, stage=stage)


def mirror_bundle(path: str, bundle: str, refspec: str, commit: str, stage: str) -> None:
    """Make the existing empty folder ``path`` a bare repository with ``bundle``'s refs
    (``refspec``); an error unless that gave it ``commit``."""
    run(path, "init", "-q", "--bare", stage=stage)
    run(path, "fetch", "-q", bundle, refspec, stage=stage)
    run(path, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}", stage=stage)


def shared_checkout(folder: str, mirror: str, repo: str, commit: str, stage: str) -> None:
    """Clone ``mirror`` to ``repo`` (in ``folder``) sharing its objects, no automatic gc,
    with ``commit`` checked out on a detached HEAD."""
    run(folder, "clone", "-q", "--shared", "--no-checkout", mirror, repo, stage=stage)
    run(repo, "config", "gc.auto", "0", stage=stage)
    run(repo, "checkout", "-q", "--detach", commit, stage=stage)


# --- commit trailers (read and checked by trailers.py) ----------------------------------------
# Pinned so a user's trailer.* configuration cannot change what is written or read; hooks and
# fsmonitor off like every git command patchgate runs (issue 12). These return the completed
# process whole: trailers.py turns a timeout, a truncation or a failure into its TRAILERS error.
TRAILER_CONFIG = (*NO_HOOKS, "-c", "trailer.separators=:")
# One -z record a commit: sha NUL subject NUL its trailers (unfolded, one per line).
TRAILER_LOG_FORMAT = "--format=%H%x00%s%x00%(trailers:only,unfold)"


def _trailer_git(
    argv: Sequence[str],
    cwd: str | None,
    input_bytes: bytes | None = None,
    output_cap: int = proc.DEFAULT_OUTPUT_CAP,
) -> proc.Completed:
    return proc.run(
        ["git", *TRAILER_CONFIG, *argv],
        cwd=cwd,
        timeout=GIT_TIMEOUT,
        input_bytes=input_bytes,
        output_cap=output_cap,
    )


def interpret_trailers(message: str) -> proc.Completed:
    """``git interpret-trailers --parse`` of a commit message (``--no-divider``: like ``git
    log``'s ``%(trailers)``, a "---" line in the body does not hide the trailers after it)."""
    argv = ["interpret-trailers", "--parse", "--no-divider"]
    return _trailer_git(argv, None, input_bytes=message.encode("utf-8"))


def commit_message(repo: str, sha: str) -> proc.Completed:
    """The raw message (``%B``) of commit ``sha``."""
    return _trailer_git(["log", "-1", "--format=%B", "--end-of-options", sha, "--"], repo)


def trailer_log(
    repo: str, rev: str, markers: Sequence[str], limit: int | None, output_cap: int
) -> proc.Completed:
    """``git log -z`` of ``rev`` (TRAILER_LOG_FORMAT records), only the commits whose message
    has a line starting with one of the trailer keys ``markers`` (case-insensitive)."""
    argv = ["log", "-z", TRAILER_LOG_FORMAT]
    argv += ["--regexp-ignore-case", *(f"--grep=^{key}:" for key in markers)]
    if limit is not None:
        argv.append(f"--max-count={limit}")
    argv += ["--end-of-options", rev, "--"]
    return _trailer_git(argv, repo, output_cap=output_cap)


def git_dir_probe(repo: str) -> proc.Completed:
    """``git rev-parse --git-dir``: exit 0 when ``repo`` is a git repository."""
    return _trailer_git(["rev-parse", "--git-dir"], repo)


def head_probe(repo: str) -> proc.Completed:
    """``git rev-parse -q --verify HEAD``: exit 0 when HEAD names a commit (not unborn)."""
    return _trailer_git(["rev-parse", "-q", "--verify", "HEAD"], repo)


# --- git inside the jail -----------------------------------------------------------------------


def apply_argv(diff: str, *flags: str) -> tuple[str, ...]:
    """The ``git apply`` of a patch's diff in its workspace: run by the jail (the diff is
    untrusted), not by ``run``; ``flags`` before the diff (``--numstat``, ``-pN``, …)."""
    return ("git", "apply", "--whitespace=nowarn", *flags, diff)


def fetch(
    repo: str,
    options: Sequence[str],
    remote: str,
    refspec: str,
    env: dict[str, str],
    timeout: float,
) -> proc.Completed:
    """``git fetch`` of one refspec, no tags; the caller reads the outcome."""
    return run(
        repo, *options, "fetch", "--quiet", "--no-tags", remote, refspec,
        check=False, env=env, timeout=timeout,
    )  # fmt: skip


def push(
    repo: str,
    options: Sequence[str],
    remote: str,
    refspec: str,
    env: dict[str, str],
    timeout: float,
) -> proc.Completed:
    """``git push --porcelain`` of one refspec; the caller reads the outcome."""
    return run(
        repo, *options, "push", "--porcelain", remote, refspec,
        check=False, env=env, timeout=timeout,
    )  # fmt: skip


def merge_ff_only(repo: str, rev: str) -> proc.Completed:
    return run(repo, "merge", "--ff-only", "--quiet", rev, check=False)


def status_z(repo: str, *options: str, paths: Sequence[str] = (), literal: bool = True) -> str:
    """``git status --porcelain=v1 -z`` with ``options``, limited to ``paths`` (taken literally
    unless ``literal`` is False: magic pathspecs), read without rewriting the index."""
    pathspec = ("--", *paths) if paths else ()
    magic = ("--literal-pathspecs",) if literal else ()
    return run(
        repo, "--no-optional-locks", *magic, "status", "--porcelain=v1", "-z", *options, *pathspec
    ).output


def tree_with(repo: str, index: str, head: str, paths: Sequence[str], stage: str) -> str:
    """The tree of ``head`` with ``paths`` as they are in the working tree (index: a private
    index file, removed afterwards)."""
    env = git_env({"GIT_INDEX_FILE": index})
    try:
        run(repo, "read-tree", head, env=env, stage=stage)
        run(repo, "update-index", "--add", "--remove", "--", *paths, env=env, stage=stage)
        return out(repo, "write-tree", env=env, stage=stage)
    finally:
        for leftover in (index, index + ".lock"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def commit_tree(repo: str, tree: str, parent: str, message: str, stage: str) -> str:
    """A commit object of exactly ``tree`` on ``parent``; its id."""
    done = run(
        repo, "commit-tree", tree, "-p", parent, "-F", "-", input_bytes=message.encode(),
        stage=stage,
    )  # fmt: skip
    commit = next(
        (w for w in reversed(done.output.split()) if re.fullmatch(r"[0-9a-f]{40}", w)), ""
    )
    if not commit:
        raise PatchgateError(
            stage, f"git commit-tree gave no commit id: {done.output}; see the log"
        )
    return commit


def update_ref(repo: str, ref: str, new: str, old: str, reason: str, stage: str) -> None:
    """Move ``ref`` to ``new`` only if it still points at ``old``."""
    run(repo, "update-ref", "-m", reason, ref, new, old, stage=stage)


def remove_worktree(repo: str, path: str) -> None:
    """Remove the worktree at ``path`` (if it is there) and prune what git still lists."""
    if os.path.lexists(path):
        run(repo, "worktree", "remove", "--force", path, check=False)
    run(repo, "worktree", "prune", check=False)


# --- live_changed (issue 11, item 8): three-way checks of what landed on live -----------------


def entry(repo: str, treeish: str, path: str) -> tuple[str, str] | None:
    """(mode, blob) of ``path`` in ``treeish``; None when it is not there."""
    listing = run(repo, "ls-tree", "-z", "--full-tree", treeish, "--", path).output
    for record in filter(None, listing.split("\0")):
        meta, name = record.split("\t", 1)
        mode, _, blob = meta.split(" ")
        if name == path:
            return mode, blob
    return None


def merge_file(repo: str, current: bytes, base: bytes, other: bytes) -> tuple[int, bytes]:
    """``git merge-file -p``: (conflicts, merged bytes). 0 is a clean merge; a negative count
    (or 255) is git's refusal (a binary file)."""
    with tempfile.TemporaryDirectory(prefix="patchgate-merge-") as tmp:
        names = []
        for name, data in (("current", current), ("base", base), ("other", other)):
            path = os.path.join(tmp, name)
            with open(path, "wb") as fh:
                fh.write(data)
            names.append(path)
        done = subprocess.run(
            ("git", "-C", repo, "merge-file", "-p", "-q", *names),
            env=git_env(),
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    # git exits with the number of conflicts (at most 127), or -1 (255) when it cannot merge.
    return (done.returncode if done.returncode < 128 else -1), done.stdout
