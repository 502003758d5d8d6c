"""What a diff claims beside itself: ``patches/NAME.files.json`` next to ``patches/NAME.diff``.

A diff's FILES come from its headers, so scope can only ever find it in scope with itself. A
proposal from a model claims its files separately (``affected_files``), and scope must enforce
the claim: ``doit propose`` writes the claim here, and the verify chain of that diff takes its
FILES from it (a diff touching anything else fails SCOPE; a claimed file it leaves untouched
fails too). The same file may carry the model's ``test_commands``: untrusted, they become extra
gates ``model-test-N`` after the configured ones, and only in the jail (never with
``jail: none``).

    {"files": ["calc/ops.py"], "test_commands": [["python", "-m", "pytest", "-q"]]}

Anyone may write such a file by hand for a diff of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from . import config
from .apply import check_declared
from .errors import PatchgateError

SUFFIX = ".files.json"


@dataclass(frozen=True)
class Claims:
    files: list[str]
    test_commands: list[list[str]]


def sidecar_of(patch: str) -> str:
    return os.path.splitext(patch)[0] + SUFFIX


def read_claims(patch: str) -> Claims | None:
    """The claims beside ``patch`` (a diff), or None when there is no such file."""
    path = sidecar_of(patch)
    if not os.path.isfile(path):
        return None
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise PatchgateError(
            "PREFLIGHT", f"{name} is not readable JSON ({exc}); fix it or delete it"
        ) from None
    files = data.get("files") if isinstance(data, dict) else None
    commands = data.get("test_commands", []) if isinstance(data, dict) else None
    if (
        not isinstance(files, list)
        or not files
        or not all(isinstance(f, str) for f in files)
        or not isinstance(commands, list)
        or not all(
            isinstance(c, list) and c and all(isinstance(a, str) and a for a in c) for c in commands
        )
    ):
        raise PatchgateError(
            "PREFLIGHT",
            f'{name} must be {{"files": ["path", ...], "test_commands": [["cmd", "arg"], ...]}}; '
            "fix it or delete it",
        )
    return Claims(check_declared(files, name), [list(c) for c in commands])


def extra_gates(patch: str, cfg: config.Config) -> list[config.Gate]:
    """The claimed test commands as gates model-test-1, ...: only when the jail is on."""
    claims = read_claims(patch) if os.path.splitext(patch)[1] in (".diff", ".patch") else None
    if claims is None or cfg["jail"] != "bwrap":
        return []
    return [
        config.Gate(
            name=f"model-test-{i}",
            command=tuple(command),
            files=("*",),
            atlas="test",
            timeout=cfg["gate_timeout"],
        )
        for i, command in enumerate(claims.test_commands, start=1)
    ]


def gates_of(cfg: config.Config, patch: str | None) -> list[config.Gate]:
    """The gates a patch is verified with: the configured ones, then its claimed tests."""
    gates = config.effective_gates(cfg)
    if patch:
        with contextlib.suppress(PatchgateError):  # the chain's preflight says why
            gates += extra_gates(patch, cfg)
    return gates
