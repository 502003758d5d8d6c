"""Where patches are filed (issue 11, item 9): a failed verification's patch is copied to
``patches/unsuccessful/``, a promoted one moved to ``patches/successful/`` (promote.move_patch),
and ``doit verify latest=1`` finds the newest patch in ``patches/`` (AM's ``-l``).
"""

from __future__ import annotations

import glob
import os
import shutil

from .apply import KINDS, PATCHES_DIR, resolve_patch
from .errors import PatchgateError

UNSUCCESSFUL = "unsuccessful"


def copy_to(root: str, patch: str | None, folder: str) -> str | None:
    """A copy of the patch in patches/<folder>/ (replacing an older copy of the same name)."""
    if not patch or not os.path.isfile(patch):
        return None
    dest_dir = os.path.join(root, PATCHES_DIR, folder)
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, os.path.basename(patch))
    shutil.copy2(patch, dest)
    return dest


# patchgate's own patches (a rollback's revert diff) and state are not the user's inbox.
OWN = (os.path.join(PATCHES_DIR, ".state"), os.path.join(PATCHES_DIR, "workspaces"))


def file_failed(root: str, patch: str | None) -> str | None:
    """A failed verification keeps a copy of its patch in patches/unsuccessful/."""
    if not patch or not os.path.isfile(patch):
        return None
    real = os.path.realpath(patch)
    for own in (*OWN, os.path.join(PATCHES_DIR, UNSUCCESSFUL)):
        folder = os.path.realpath(os.path.join(root, own))
        if os.path.commonpath([real, folder]) == folder:
            return None  # patchgate's own, or already filed there
    return copy_to(root, patch, UNSUCCESSFUL)


def refuse_filed(root: str, patch: str, stage: str, message: str) -> None:
    """Action of a verification refused before its workspace exists: file the patch, fail."""
    file_failed(root, patch)
    raise PatchgateError(stage, message)


def newest_patch(root: str) -> str:
    """The newest patch (by modification time) directly in patches/: .py, .diff, .patch, .zip."""
    inbox = os.path.join(root, PATCHES_DIR)
    try:
        names = os.listdir(inbox)
    except OSError:
        names = []
    found = []
    for name in names:
        path = os.path.join(inbox, name)
        if os.path.splitext(name)[1].lower() in KINDS and os.path.isfile(path):
            found.append((os.stat(path).st_mtime_ns, name, path))
    if not found:
        raise PatchgateError(
            "PREFLIGHT",
            f"latest=1 found no patch (.py, .diff, .patch, .zip) directly in {PATCHES_DIR}/; "
            "put one there or name it with patch=PATH",
        )
    return max(found)[2]


def wants_latest(raw: str | None) -> bool:
    """latest=1 (or yes/true/on); latest=0 is no request; anything else is refused."""
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise PatchgateError("PREFLIGHT", f"latest={raw} is not a yes/no value; use latest=1")


def issue_of(root: str, raw: str) -> str:
    """``doit promote patch=P`` without issue=: P's stem, as for ``doit verify patch=P``."""
    if glob.has_magic(raw) or "," in raw:
        raise PatchgateError(
            "PREFLIGHT", f"patch={raw} may name several patches; promote lands one: name one file"
        )
    return os.path.splitext(os.path.basename(resolve_patch(root, raw)))[0]
