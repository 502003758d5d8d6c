"""`patchgate init`: set patchgate up inside an existing git repository (issue 11).

Run at the repository's top folder, it writes

* ``patchgate.yaml``: the gates detected from the repository's own configuration (detect.py),
  each with the reason it was chosen, and ``tool_env`` when the repository has its own venv;
* ``dodo.py``: one line, ``from patchgate.dodo import *``, so that plain ``doit`` works there;
* ``.gitignore`` lines for patchgate's runtime folders (only the missing ones are added).

An existing ``patchgate.yaml`` or ``dodo.py`` is never overwritten: init says it kept it.
After it, ``doit verify patch=X`` (or ``patchgate verify patch=X``) works in that folder.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from . import detect, git
from .errors import PatchgateError

DODO_TEXT = (
    '"""patchgate\'s commands for this repository: `doit list` shows them."""\n\n'
    "from patchgate.dodo import *  # noqa: F403\n"
)
# Runtime state patchgate writes in the project folder: never committed.
IGNORED = (
    "/patches/workspaces/",
    "/patches/logs/",
    "/patches/successful/",
    "/patches/unsuccessful/",
    "/patches/.state/",
    "/patches/latest.log",
    "/patches/*.lock",
    "/audit/results/",
    "/audit/*.lock",
)
# A venv in the repository is the project's own environment: its tools run the gates.
VENV_NAMES = (".venv", "venv")


class Outcome(NamedTuple):
    """One file init wrote or kept, and what it says about it."""

    path: str
    action: str  # "wrote", "kept", "updated", "unchanged"
    detail: str


def tool_env(top: str) -> str | None:
    for name in VENV_NAMES:
        if os.path.exists(os.path.join(top, name, "bin", "python")):
            return name
    return None


def config_text(top: str) -> str:
    """patchgate.yaml for the repository at ``top``: detected gates with their reasons."""
    env = tool_env(top)
    tool_bin = os.path.join(top, env, "bin") if env else None
    detected = detect.detect_gates(top, tool_bin)
    lines = [
        "# patchgate's configuration for this repository (written by `patchgate init`).",
        "# Every key not set here has its documented default: `doit config` shows them all.",
        "live_repo: .",
    ]
    if env:
        lines += ["# the repository's own environment runs the gates", f"tool_env: {env}"]
    lines += [
        "# The gates below were detected from this repository's configuration. Delete the",
        "# whole `gates:` list to have patchgate detect them again on every run.",
    ]
    if not detected:
        lines.append("gates: []  # nothing detected: no tool configuration, no tests")
    else:
        lines.append("gates:")
    for gate, reason in detected:
        lines.append(f"  # {reason}")
        lines.append(f"  - name: {gate['name']}")
        lines.append(f"    command: {json.dumps(gate['command'])}")
        lines.append(f"    files: {json.dumps(gate['files'])}")
        for key in ("fixes", "junit"):
            if gate.get(key):
                lines.append(f"    {key}: true")
    return "\n".join(lines) + "\n"


def write_new(path: str, text: str, what: str, hint: str = "") -> Outcome:
    name = os.path.basename(path)
    if os.path.exists(path):
        detail = f"{name} exists and was left as it is ({what} not written){hint}"
        return Outcome(name, "kept", detail)
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(text)
    return Outcome(name, "wrote", what)


def update_gitignore(top: str) -> Outcome:
    path = os.path.join(top, ".gitignore")
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in IGNORED if line not in present]
    if not missing:
        return Outcome(".gitignore", "unchanged", "already ignores patchgate's runtime folders")
    block = "# patchgate's runtime state (patchgate init)\n" + "\n".join(missing) + "\n"
    if text and not text.endswith("\n"):
        block = "\n" + block
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(block)
    action = "updated" if text else "wrote"
    return Outcome(".gitignore", action, f"ignores {len(missing)} runtime path(s)")


def init(folder: str) -> list[Outcome]:
    """Set patchgate up in the git repository whose top folder is ``folder``."""
    folder = os.path.abspath(folder)
    shown = git.toplevel(folder)
    if shown is None:
        raise PatchgateError(
            "INIT", f"{folder} is not a git repository; run patchgate init in your repository"
        )
    top = os.path.realpath(shown)
    if top != os.path.realpath(folder):
        raise PatchgateError(
            "INIT", f"{folder} is inside the repository {top}; run patchgate init in {top}"
        )
    outcomes = [
        write_new(os.path.join(top, "patchgate.yaml"), config_text(top), "configuration"),
        write_new(
            os.path.join(top, "dodo.py"),
            DODO_TEXT,
            "doit's task file",
            "; run patchgate's tasks as `patchgate verify patch=X`, or add "
            "`from patchgate.dodo import *` to it",
        ),
        update_gitignore(top),
    ]
    os.makedirs(os.path.join(top, "patches"), exist_ok=True)
    return outcomes


def main(args: list[str]) -> int:
    """`patchgate init`: the summary block, exit 0 on success."""
    if args:
        print(
            "RESULT: FAIL\nSTAGE: INIT\nREASON: patchgate init takes no arguments; "
            "run it in the repository's top folder"
        )
        return 2
    try:
        outcomes = init(os.getcwd())
    except PatchgateError as exc:
        print(f"RESULT: FAIL\nSTAGE: {exc.stage}\nREASON: {exc.message}")
        return 1
    for outcome in outcomes:
        print(f"init: {outcome.path}: {outcome.action}: {outcome.detail}")
    if outcomes[0].action == "wrote":
        env = tool_env(os.getcwd())
        tool_bin = os.path.join(os.getcwd(), env, "bin") if env else None
        for gate, reason in detect.detect_gates(os.getcwd(), tool_bin):
            print(f"init: gate {gate['name']}: {reason}")
    written = [o.path for o in outcomes if o.action in ("wrote", "updated")]
    print(
        "RESULT: SUCCESS\n"
        f"FILES: {', '.join(written) or '(none: patchgate was already set up here)'}\n"
        "NEXT: put a patch in patches/ and run: doit verify patch=patches/NAME.py"
    )
    return 0
