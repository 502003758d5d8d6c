"""What ``doit propose`` recorded about an issue's proposal, for the commands that read it.

propose.py writes ``propose.json`` in the issue's workspace (the model, its endpoint, the
attempts and their verdicts); promote reads it back here for the commit's trailers
(Proposed-by, Confidence, Triggered-by) without importing the propose command.
"""

from __future__ import annotations

import os
from typing import Any

from . import config
from .steps import read_json
from .workspace import Workspace

STATE_FILE = "propose.json"


def state_path(root: str, issue: str) -> str:
    return Workspace(root, issue).path(STATE_FILE)


def read_state(root: str, issue: str) -> dict[str, Any] | None:
    try:
        data = read_json(state_path(root, issue))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def trailer_pairs(ws_dir: str) -> list[tuple[str, str]]:
    """Proposed-by, Confidence, Triggered-by for a workspace whose verified patch a model wrote.

    Triggered-by: promote's own ``trigger=`` if given, else the one propose recorded."""
    trigger = config.variable("trigger")
    ws = Workspace.at(ws_dir)
    state = read_state(ws.root, ws.issue)
    if not state or state.get("state") != "passed" or not os.path.exists(ws.result):
        return []
    passed = [a for a in state.get("attempts", []) if a.get("verdict") == "pass"]
    if not passed or ws.read_result().patch_id != passed[-1].get("patch_id"):
        return []  # the workspace verified something else since
    score = passed[-1].get("confidence_score")
    return [
        ("Proposed-by", f"{state.get('model')} via {state.get('llm_endpoint')}"),
        ("Confidence", f"{score:g}" if isinstance(score, int | float) else "unknown"),
        ("Triggered-by", trigger or state.get("trigger") or f"doit propose issue={ws.issue}"),
    ]
