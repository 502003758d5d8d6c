"""Deterministic zips: sorted entries, fixed timestamps, links stored as links, never followed."""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
from collections.abc import Iterable

from . import faults, git

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Never archived, wherever they appear (caches and environments are not part of a patch).
EXCLUDED_DIRS = (
    ".git",
    "venv",
    ".venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "__pycache__",
)


def excluded(path: str) -> bool:
    parts = path.split("/")
    return any(p in EXCLUDED_DIRS for p in parts) or path.endswith(".pyc")


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    info.create_system = 3  # unix, so external_attr carries the file type and mode
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_zip(path: str, entries: Iterable[tuple[str, int, bytes]]) -> None:
    """Write (name, unix mode, bytes) entries sorted by name, atomically."""
    tmp = f"{path}.{os.getpid()}.tmp"
    ordered = sorted(entries)
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for i, (name, mode, data) in enumerate(ordered):
                if i == len(ordered) // 2:
                    faults.point(f"zip-writing:{os.path.basename(path)}")
                zf.writestr(_entry(name, mode), data)
        os.replace(tmp, path)
    except BaseException as exc:  # disk full, Ctrl-C: no half zip is left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # name the file the user knows, not the temporary one
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise


def tree_entries(
    repo: str, changes: list[dict[str, str]], prefix: str
) -> list[tuple[str, int, bytes]]:
    """The changed files as they are in the verified tree, read from git objects, not the disk.

    A symlink is stored as a link (its target text, mode 120000): nothing follows it.
    """
    out = []
    for change in changes:
        if change["status"] == "D" or excluded(change["path"]):
            continue
        data = git.blob_bytes(repo, change["blob"])
        out.append((f"{prefix}{change['path']}", _kind(change["mode"]), data))
    return out


def _kind(mode: str) -> int:
    """A git mode as a zip entry's unix mode: a link stays a link, nothing follows it."""
    value = int(mode, 8)
    return stat.S_IFLNK | 0o777 if stat.S_ISLNK(value) else stat.S_IFREG | (value & 0o777)


def commit_zip(repo: str, commit: str, path: str) -> None:
    """Every file of ``commit``, as ``git archive`` would zip it but deaf to .gitattributes:
    ``export-ignore`` cannot leave a landed file out, nor ``export-subst`` rewrite one."""
    write_zip(
        path, [(name, _kind(mode), data) for name, mode, data in git.tree_files(repo, commit)]
    )


def file_entry(name: str, path: str) -> tuple[str, int, bytes]:
    with open(path, "rb") as fh:
        return name, stat.S_IFREG | 0o644, fh.read()
