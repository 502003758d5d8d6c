"""Sealed verification results (issue 12): promote lands only a tree the verify steps recorded.

``result.json`` says which tree promote commits. Nothing tied that ``tree`` to the steps that
judged it: a swapped file landed a tree no gate saw, with trailers saying "verified". Two
checks close that, both in promote's preflight:

* a seal: ``result.seal`` next to ``result.json`` holds an HMAC-SHA256 of its bytes, keyed by
  ``patches/.state/seal.key`` (32 random bytes, mode 0600, made on first use). The jail never
  sees ``patches/`` and a patch cannot write it; an edited result.json no longer matches;
* the tree is derived again from the step records: apply's tree, then each gate's record in
  order (a fixer's record turns its input tree into its output tree). It must be the tree
  result.json names, with the same changed paths.

What it does not stop: someone who can read ``seal.key`` (the operator's own account) can seal
what they like; that person can also run git by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from typing import Any

from .errors import PatchgateError
from .steps import STATE_DIR, read_json
from .workspace import Result, Workspace

KEY_FILE = os.path.join(STATE_DIR, "seal.key")
SEAL_SUFFIX = ".seal"
STAGE = "PROMOTE"


def _key(root: str) -> bytes:
    """The project's sealing key; made (0600, atomically) on first use."""
    path = os.path.join(root, KEY_FILE)
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        key = fh.read()
        if len(key) == 32:
            return key
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(32))
        fh.flush()
        os.fsync(fh.fileno())
    with contextlib.suppress(FileExistsError):
        os.link(tmp, path)  # the first writer wins; a concurrent one reads the winner's key
    os.unlink(tmp)
    with open(path, "rb") as fh:
        return fh.read()


def _mac(root: str, data: bytes) -> str:
    return hmac.new(_key(root), data, hashlib.sha256).hexdigest()


def seal(root: str, path: str) -> None:
    """Write ``path``.seal: the HMAC of ``path`` as it is now."""
    with open(path, "rb") as fh:
        mac = _mac(root, fh.read())
    tmp = f"{path}{SEAL_SUFFIX}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(mac + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path + SEAL_SUFFIX)


def read_sealed(root: str, path: str, issue: str) -> Result:
    """``path`` parsed, read once; PatchgateError unless those bytes are what verify sealed."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        with open(path + SEAL_SUFFIX, encoding="ascii") as fh:
            stored = fh.read().strip()
    except FileNotFoundError:
        stored = ""
    if not stored or not hmac.compare_digest(stored, _mac(root, data)):
        raise PatchgateError(
            STAGE,
            f"the verification result of issue {issue} is not the one verify wrote (result.json "
            f"was edited, or its seal is missing); run doit verify again, then promote",
        )
    return Result.from_json(json.loads(data), STAGE)


def derived_tree(ws: Workspace, result: Result) -> tuple[str, list[str]]:
    """The tree and changed paths the step records lead to: apply's, then each gate's."""
    current: dict[str, Any] = read_json(ws.step_file("apply"))
    for name in result.gates:
        path = ws.gate_file(name)
        if not os.path.exists(path):
            continue
        record: dict[str, Any] = read_json(path)
        if record.get("input_tree") == current["tree"] and record.get("tree"):
            current = record
    return current["tree"], sorted(c["path"] for c in current["changes"])


def check_result(ws: Workspace, result: Result) -> None:
    """After ``read_sealed``: ``result`` names the tree its step records lead to."""
    tree, paths = derived_tree(ws, result)
    if tree != result.tree or paths != sorted(c["path"] for c in result.changes):
        raise PatchgateError(
            STAGE,
            f"result.json of issue {ws.issue} names tree {str(result.tree)[:12]}, but its "
            f"steps verified {tree[:12]}; run doit verify again, then promote",
        )
