"""The apply step: run a patch script, or git-apply a diff or a zip of diffs, in the jail."""

from __future__ import annotations

import ast
import contextlib
import lzma
import os
import posixpath
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any, BinaryIO

from . import faults, git, jail, live_changed, proc, report
from .errors import PatchgateError
from .liveguard import wait_live_capture
from .settings import Settings
from .steps import write_json
from .workspace import Workspace, attempt, mark_tree

PATCHES_DIR = "patches"
KINDS = {".py": "script", ".diff": "diff", ".patch": "diff", ".zip": "zip"}
MAX_STRIP = 3
# In the workspace: the strip=N a diff was applied with (read back by verify.remembered_strip).
STRIP_MEMO = "strip.json"
# A zip patch is read outside the jail: what its .patch members may inflate to, each and in all.
MAX_ZIP_MEMBER_BYTES = 64 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 256 * 1024 * 1024
ZIP_CHUNK = 1024 * 1024
# What zipfile raises for a zip or a member it cannot read. Opening a member: encrypted
# (RuntimeError), an unknown compression method (NotImplementedError), a bad local header
# (BadZipFile; an offset that seeks nowhere is an OSError). Reading it: a corrupt stream
# (bzip2's is an OSError) or a wrong CRC (BadZipFile).
ZIP_OPEN_ERRORS = (
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
    EOFError,
    ValueError,
    OSError,
)
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError)


def resolve_patch(root: str, raw: str) -> str:
    """The patch's absolute path; refused unless it is an existing file under patches/."""
    inbox = os.path.realpath(os.path.join(root, PATCHES_DIR))
    candidate = raw if os.path.isabs(raw) else os.path.join(root, raw)
    if not os.path.isabs(raw) and not os.path.exists(candidate):
        candidate = os.path.join(inbox, raw)  # AM style: a bare name is looked up in patches/
    path = os.path.realpath(candidate)
    if os.path.commonpath([path, inbox]) != inbox:
        raise PatchgateError(
            "PREFLIGHT", f"patch {raw} is outside patches/; move it into {PATCHES_DIR}/ and retry"
        )
    if not os.path.isfile(path):
        raise PatchgateError("PREFLIGHT", f"patch {raw} does not exist; check the path")
    kind_of(path)
    return path


def kind_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in KINDS:
        raise PatchgateError(
            "PREFLIGHT",
            f"patch {os.path.basename(path)} has an unknown kind {ext or '(no extension)'}; "
            "use a .py patch script, a .diff/.patch unified diff or a .zip of .patch files",
        )
    return KINDS[ext]


def check_declared(paths: Sequence[str], source: str) -> list[str]:
    """Normalised repo-relative paths; absolute, '..' and .git paths are refused."""
    clean = []
    for raw in paths:
        norm = posixpath.normpath(raw)
        parts = norm.split("/")
        if raw.startswith("/") or os.path.isabs(raw):
            why = "is absolute"
        elif ".." in parts:
            why = "contains '..'"
        elif parts[0] == ".git":
            why = "points into .git"
        elif norm in ("", "."):
            why = "is empty"
        else:
            clean.append(norm)
            continue
        raise PatchgateError(
            "PREFLIGHT", f"{source}: FILES entry {raw!r} {why}; list repo-relative paths only"
        )
    return sorted(set(clean))


def script_files(path: str) -> list[str]:
    """FILES of a patch script, read with ast: the script does not run."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=name)
    except SyntaxError as exc:
        raise PatchgateError(
            "PREFLIGHT", f"patch {name} line {exc.lineno}: syntax error ({exc.msg}); fix the script"
        ) from None
    except UnicodeDecodeError:
        raise PatchgateError(
            "PREFLIGHT", f"patch {name} is not UTF-8 text; save it as UTF-8"
        ) from None
    except (RecursionError, MemoryError):  # issue 12: "x = ------...1", "1+1+...+1"
        raise PatchgateError(
            "PREFLIGHT", f"patch {name}: an expression is too deeply nested to parse; simplify it"
        ) from None
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and t.id == "FILES" for t in targets):
            value: Any = None
            with contextlib.suppress(ValueError, RecursionError, MemoryError):
                value = ast.literal_eval(node.value) if node.value is not None else None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PatchgateError(
                    "PREFLIGHT",
                    f"patch {name}: FILES must be a literal list of strings; "
                    'write e.g. FILES = ["src/app.py"]',
                )
            return check_declared(value, f"patch {name}")
    raise PatchgateError(
        "PREFLIGHT", f'patch {name} declares no FILES; add FILES = ["path", ...] at the top'
    )


def _logged(log: str, title: str, argv: Sequence[str], done: proc.Completed) -> None:
    report.log(
        log,
        f"$ {' '.join(argv)}\n{done.output}[{title}: exit {done.returncode}, {done.duration:.2f}s]",
    )


def _last_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def run_script(settings: Settings, ws: Workspace, patch: str, log: str) -> None:
    python = os.path.join(settings.tool_env, "bin", "python")
    done = jail.run_jailed(
        settings, ws.repo, (python, patch), timeout=settings.patch_timeout, readonly=(patch,)
    )
    _logged(log, "patch script", (python, os.path.relpath(patch, ws.root)), done)
    if done.timed_out:
        raise PatchgateError(
            "APPLY",
            f"patch script timed out after {settings.patch_timeout}s and was killed; "
            "fix the patch or raise patch_timeout",
        )
    if done.returncode != 0:
        raise PatchgateError(
            "APPLY",
            f"patch script failed (exit {done.returncode}): {_last_line(done.output)}; "
            "fix the patch and verify again",
        )


def _git_apply(settings: Settings, ws: Workspace, diff: str, *flags: str) -> proc.Completed:
    return jail.run_jailed(
        settings,
        ws.repo,
        git.apply_argv(diff, *flags),
        timeout=settings.patch_timeout,
        readonly=(diff,),
    )


# Lines of a git diff's extended header that name a path, besides ``---``/``+++``: git apply
# reads a copy's or rename's source from these (a copy from /etc/passwd reads that file).
PATH_HEADERS = (
    "copy from ",
    "copy to ",
    "rename from ",
    "rename to ",
    "rename old ",
    "rename new ",
)
GIT_HEADER = "diff --git "
C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def unquote(text: str) -> tuple[str, str]:
    """(name, what follows it) of a name git may have C-quoted (``"a/t\\303\\251st"``)."""
    if not text.startswith('"'):
        return text, ""
    out = bytearray()
    i = 1
    while i < len(text) and text[i] != '"':
        ch = text[i]
        if ch == "\\" and text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
            out.append(int(text[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        elif ch == "\\" and text[i + 1 : i + 2] in C_ESCAPES:
            out.append(C_ESCAPES[text[i + 1]])
            i += 2
        else:
            out += ch.encode("utf-8", errors="surrogateescape")
            i += 1
    return out.decode("utf-8", errors="replace"), text[i + 1 :]


def _strip_one(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else ""


def git_header_names(rest: str) -> list[str]:
    """The two names of a ``diff --git A B`` line (``rest`` is what follows ``diff --git``).

    Unquoted names may hold spaces: like git, take the split at which both names are the same
    after their first folder (``a/x y b/x y``); there is none for a rename, whose names git
    reads from its ``rename from``/``rename to`` lines.
    """
    if rest.startswith('"'):
        first, after = unquote(rest)
        return [first, unquote(after.lstrip(" "))[0]]
    if ' "' in rest:
        first, second = rest.split(' "', 1)
        return [first, unquote('"' + second)[0]]
    names: list[str] = []
    for i, ch in enumerate(rest):
        if ch == " " and _strip_one(rest[:i]) == _strip_one(rest[i + 1 :]):
            names += [rest[:i], rest[i + 1 :]]
    return names


def header_names(diff: str) -> list[str]:
    """The file names of a unified diff's ``---``/``+++`` header lines, as written."""
    with open(diff, encoding="utf-8", errors="replace") as fh:
        return [
            _header_name(ln[4:]) for ln in fh if ln.startswith(("--- ", "+++ ")) and ln[4:].strip()
        ]


def _header_name(text: str) -> str:
    """The name of a ``---``/``+++`` line (what follows the marker): up to a tab, unquoted."""
    text = text.rstrip("\n").lstrip(" ")
    return unquote(text)[0] if text.startswith('"') else text.split("\t")[0]


def diff_paths(diff: str) -> list[str]:
    """Every path a diff's headers name, as written: ``---``/``+++``, ``diff --git``, and the
    source and target of a copy or rename."""
    names: list[str] = []
    with open(diff, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if line.startswith(("--- ", "+++ ")) and line[4:].strip():
                names.append(_header_name(line[4:]))
            elif line.startswith(GIT_HEADER):
                names += git_header_names(line[len(GIT_HEADER) :])
            else:
                for header in PATH_HEADERS:
                    if line.startswith(header):
                        names.append(unquote(line[len(header) :])[0])
    return names


def _has_ab_prefixes(diff: str) -> bool:
    names = header_names(diff)
    return bool(names) and all(n == "/dev/null" or n.startswith(("a/", "b/")) for n in names)


def check_diff_paths(diff: str, stage: str) -> None:
    """A diff naming a path outside the repository (``..``, absolute) or inside ``.git`` is
    refused as written: in its ``---``/``+++`` lines, its ``diff --git`` line, or as the
    source or target of a copy or rename (git apply would read ``copy from /etc/passwd``).

    Without this, strip inference would find the level at which ``a/../x`` is ``x`` and apply
    it there: not what the diff says.
    """
    for name in diff_paths(diff):
        if name == "/dev/null":
            continue
        parts = name.split("/")
        # An empty folder (a//etc) is absolute once the strip level takes the a/.
        if name.startswith("/") or ".." in parts or "" in parts[:-1]:
            raise PatchgateError(
                stage,
                f"diff {os.path.basename(diff)} names {name}, a path outside the repository; "
                "regenerate it with repo-relative paths (git diff)",
            )
        if ".git" in (p.lower() for p in parts):
            raise PatchgateError(
                stage,
                f"diff {os.path.basename(diff)} names {name}, a path inside .git; "
                "a patch may change only the repository's files: drop it from the diff",
            )


def infer_strip(settings: Settings, ws: Workspace, diff: str, log: str) -> int:
    """The -p level at which the diff applies; ambiguity is an error naming strip=N."""
    name = os.path.basename(diff)
    if settings.strip is not None:
        return int(settings.strip)
    tried = {n: _git_apply(settings, ws, diff, "--check", f"-p{n}") for n in range(MAX_STRIP + 1)}
    fits = [n for n, done in tried.items() if done.returncode == 0]
    if len(fits) > 1 and 1 in fits and _has_ab_prefixes(diff):
        fits = [1]  # git's own a/ b/ convention settles it
    if len(fits) == 1:
        report.log(log, f"apply: {name} applies at strip level {fits[0]}")
        return fits[0]
    if fits:
        levels = ", ".join(str(n) for n in fits)
        raise PatchgateError(
            "APPLY", f"diff {name} applies at several strip levels ({levels}); pass strip=N"
        )
    first = _last_line(tried[1 if _has_ab_prefixes(diff) else 0].output)
    corrupt = next((d.output for d in tried.values() if is_corrupt(d.output)), None)
    if corrupt is not None:
        raise PatchgateError("APPLY", corrupt_advice(name, corrupt))
    raise PatchgateError(
        "APPLY",
        f"diff {name} does not apply to the base: {first}; "
        "regenerate it against the current live HEAD",
    )


# What git apply says about a file that is no unified diff at all (issue 11, item 9).
CORRUPT_MARKS = ("corrupt patch", "No valid patches in input", "patch fragment without header")


def is_corrupt(output: str) -> bool:
    return any(mark in output for mark in CORRUPT_MARKS)


def corrupt_advice(name: str, output: str) -> str:
    """A corrupt diff is not a stale one: say so, and how to make a valid one."""
    line = next((ln.strip() for ln in output.splitlines() if is_corrupt(ln)), _last_line(output))
    return (
        f"diff {name} is not a valid unified diff ({line}): it is corrupt, not stale; "
        "regenerate it with git diff (or diff -u), do not edit hunks by hand, and keep its "
        "line endings and trailing context lines intact"
    )


def diff_files(settings: Settings, ws: Workspace, diff: str, strip: int) -> list[str]:
    done = _git_apply(settings, ws, diff, "--numstat", "-z", f"-p{strip}")
    paths = [p for p in done.output.split("\0") if p]
    names = [p.split("\t", 2)[2] if p.count("\t") >= 2 else p for p in paths]
    return check_declared([n for n in names if n], f"diff {os.path.basename(diff)}")


def apply_diff(settings: Settings, ws: Workspace, diff: str, log: str) -> list[str]:
    check_diff_paths(diff, "APPLY")
    strip = infer_strip(settings, ws, diff, log)
    files = diff_files(settings, ws, diff, strip)
    done = _git_apply(settings, ws, diff, f"-p{strip}")
    _logged(log, "git apply", ("git", "apply", f"-p{strip}", os.path.basename(diff)), done)
    if done.returncode != 0:
        if is_corrupt(done.output):
            raise PatchgateError("APPLY", corrupt_advice(os.path.basename(diff), done.output))
        raise PatchgateError(
            "APPLY",
            f"git apply {os.path.basename(diff)} failed: "
            f"{_last_line(done.output)}; regenerate the diff",
        )
    return files


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MiB"


def _zip_refused(zip_name: str, member: str, exc: BaseException) -> str:
    """What is wrong with one member, from what zipfile raised reading it."""
    if isinstance(exc, RuntimeError) and "encrypted" in str(exc):
        return f"zip {zip_name}: member {member} is encrypted; re-create the zip without a password"
    if isinstance(exc, NotImplementedError):
        return (
            f"zip {zip_name}: member {member} uses a compression method patchgate cannot read "
            f"({exc}); re-create the zip with plain deflate (zip's default)"
        )
    return f"zip {zip_name}: member {member} is corrupt ({exc}); re-create the zip"


def _copy_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: BinaryIO | None, budget: int
) -> int:
    """Inflate one member into ``out`` (or nowhere), in chunks: its size, or -1 past ``budget``.

    The sizes a zip declares may lie: the count is of what actually comes out. Only reading
    raises ZIP_READ_ERRORS; a failing write (disk full) is no fault of the member.
    """
    size = 0
    try:
        member = zf.open(info)
    except ZIP_OPEN_ERRORS as exc:
        raise _Unreadable(exc) from None
    with member as src:
        while True:
            try:
                chunk = src.read(ZIP_CHUNK)
            except ZIP_READ_ERRORS as exc:
                raise _Unreadable(exc) from None
            if not chunk:
                return size
            size += len(chunk)
            if size > budget:
                return -1
            if out is not None:
                out.write(chunk)


class _Unreadable(Exception):
    """A member's stream could not be read (zipfile's own error inside)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _fresh_dir(path: str) -> None:
    """An empty folder at ``path``; whatever was there (a symlink too) is removed, not followed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    os.makedirs(path)


def _new_file(path: str) -> BinaryIO:
    """A file created for writing: never one that was there, never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def unpack_zip(path: str, dest: str | None, stage: str = "PREFLIGHT") -> list[str]:
    """The zip's .patch/.diff members, sorted, written flat to ``dest`` as 0000.patch, ...: no
    path from the zip is used. With ``dest`` None every member is read and nothing written
    (a check before any work starts). A member that is encrypted, compressed in a way zipfile
    cannot read, corrupt, or that inflates past MAX_ZIP_MEMBER_BYTES (MAX_ZIP_TOTAL_BYTES in
    all) is refused at ``stage``: the zip is read outside the jail.
    """
    name = os.path.basename(path)
    try:
        zf = zipfile.ZipFile(path)
    except ZIP_OPEN_ERRORS:
        raise PatchgateError(
            stage, f"{name} is not a valid zip file; re-create it with zip"
        ) from None
    with zf:
        members = sorted(
            (i for i in zf.infolist() if i.filename.endswith((".patch", ".diff"))),
            key=lambda i: i.filename,
        )
        if not members:
            raise PatchgateError(stage, f"zip {name} holds no .patch files; add some")
        for info in members:
            if info.file_size > MAX_ZIP_MEMBER_BYTES:
                raise PatchgateError(stage, _too_big(name, info.filename))
        if sum(i.file_size for i in members) > MAX_ZIP_TOTAL_BYTES:
            raise PatchgateError(stage, _too_big(name, None))
        if dest is not None:
            _fresh_dir(dest)
        out: list[str] = []
        left = MAX_ZIP_TOTAL_BYTES
        for i, info in enumerate(members):
            target = None if dest is None else os.path.join(dest, f"{i:04d}.patch")
            budget = min(MAX_ZIP_MEMBER_BYTES, left)
            try:
                if target is None:
                    size = _copy_member(zf, info, None, budget)
                else:
                    with _new_file(target) as fh:
                        size = _copy_member(zf, info, fh, budget)
            except _Unreadable as bad:
                raise PatchgateError(stage, _zip_refused(name, info.filename, bad.cause)) from None
            if size < 0:
                whole = budget < MAX_ZIP_MEMBER_BYTES
                raise PatchgateError(stage, _too_big(name, None if whole else info.filename))
            left -= size
            if target is not None:
                out.append(target)
        return out


def _too_big(zip_name: str, member: str | None) -> str:
    if member is None:
        return (
            f"zip {zip_name}: its .patch members unpack to more than "
            f"{_mib(MAX_ZIP_TOTAL_BYTES)} in all; split it into smaller zips"
        )
    return (
        f"zip {zip_name}: member {member} unpacks to more than {_mib(MAX_ZIP_MEMBER_BYTES)}, "
        "the most a member may; split it into smaller diffs"
    )


def lay_tree(ws: Workspace, carry: dict[str, Any], log: str) -> list[str]:
    """Carry a verified tree's changes onto the new base (live_changed=overwrite_*).

    The files live changed meanwhile are not copied over live's version: overwrite_live merges
    the verified changes into it (live_changed.carry_merged), overwrite_workspace keeps it.
    """
    kept = git.overlay(ws.repo, carry["base_tree"], carry["tree"], skip=carry["clash"])
    if carry["mode"] == "merge":
        live_changed.carry_merged(ws.repo, carry)
    dropped = ", ".join(carry["drop"]) or "none"
    report.log(
        log,
        f"apply: carried {len(kept)} verified path(s) onto the new base, merged "
        f"{len(carry['clash']) - len(carry['drop'])}; kept live's version of: {dropped}",
    )
    return [f for f in carry["files"] if f not in carry["drop"]]


def check_unconverted(repo: str, changes: list[git.Change]) -> None:
    """What lands must be the bytes the gates test: refuse a file git would store converted."""
    odd = git.converted(repo, changes)
    if odd:
        raise PatchgateError(
            "SCOPE",
            f"git would store other bytes than the gates test for {', '.join(odd)} (a "
            ".gitattributes filter, working-tree-encoding or ident conversion applies); "
            "write the files as git stores them, or drop that attribute",
        )


def apply_patch(
    ws_dir: str,
    patch: str,
    declared: list[str],
    settings: Settings,
    log: str,
    carry: dict[str, Any] | None = None,
) -> None:
    """Action of the apply step: base, patch, snapshot; on any failure the base is put back."""
    ws = Workspace.at(ws_dir)
    kind = kind_of(patch)
    report.log(log, f"apply: {kind} {os.path.relpath(patch, ws.root)} in {ws.repo}")
    with attempt(ws) as base:
        wait_live_capture(ws.dir)  # the live guard's "before" is taken: the patch may run
        if carry is not None and carry["mode"] != "rebase":
            kind = "carry"
            files = lay_tree(ws, carry, log)
        elif kind == "script":
            run_script(settings, ws, patch, log)
            files = declared
        elif kind == "diff":
            files = apply_diff(settings, ws, patch, log)
            files = declared or files  # FILES claimed beside the diff (claims.py, issue 14)
        else:
            files = []
            for part in unpack_zip(patch, ws.path("unzipped"), "APPLY"):
                files += apply_diff(settings, ws, part, log)
        faults.point("apply-ran")
        tree = git.snapshot(ws.repo, ws.index)
        ignored = git.remove_ignored(ws.repo)
        changes = git.diff_trees(ws.repo, git.tree_of(ws.repo, base), tree)
        check_unconverted(ws.repo, changes)
        if carry is not None:  # live moved since the last verification: nothing landed undone
            live_changed.check_kept(ws.repo, carry, tree, changes)
    mark_tree(ws, tree)
    if settings.strip is not None and kind in ("diff", "zip"):
        # Later commands on this workspace (promote issue=ID) apply it with the same level.
        memo = {"patch_sha256": ws.read_meta().patch_sha256, "strip": int(settings.strip)}
        write_json(ws.path(STRIP_MEMO), memo)
    report.log(log, f"apply: {len(changes)} changed path(s)")
    if ignored:
        report.log(
            log,
            f"apply: removed {len(ignored)} path(s) the patch wrote that git ignores (not part "
            f"of the patch, so the gates do not see them): {', '.join(ignored)}",
        )
    # Only content goes in: a patch edit that produces the same tree leaves this file
    # byte-identical, so doit reruns nothing downstream.
    record: dict[str, Any] = {
        "method": kind,
        "files": sorted(set(files)),
        "tree": tree,
        "changes": [c.as_dict() for c in changes],
    }
    if carry is not None:  # what the live_changed policy did: NOTE: in the summary
        record["live_changed"] = live_changed.log_note(log, carry)
    write_json(ws.step_file("apply"), record, "step-result.schema.json")
