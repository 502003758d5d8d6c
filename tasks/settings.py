"""The plain values the steps of a verification need, taken once from the configuration."""

from __future__ import annotations

import os
from typing import Any

from . import config

RULES = ("allow_undeclared", "allow_untouched", "allow_noop")


def settings_of(cfg: config.Config) -> dict[str, Any]:
    """The plain values actions need (picklable for doit -P process)."""
    keys = (
        "jail",
        "jail_uid",
        "jail_binds",
        "patch_timeout",
        "max_processes",
        "max_memory_mb",
        "output_cap_mb",
        "strip",
        "all_gates",
        "keep_going",
        "allow_gates_fail",
        "baseline",
        *RULES,
    )
    settings = {k: cfg[k] for k in keys}
    settings["tool_env"] = os.path.dirname(cfg.tool_bin)
    return settings
