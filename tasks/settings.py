"""The plain values the steps of a verification need, taken once from the configuration."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from . import config

RULES = ("allow_undeclared", "allow_untouched", "allow_noop")


@dataclass(frozen=True)
class Settings:
    """What actions get from the configuration: the jail, its limits, the rules of a run.

    Built once by ``from_config`` (the values as the configuration holds them: a timeout of
    ``600`` stays an int, as messages print it); picklable for doit -P process. ``to_json`` is
    the same values as a dict of JSON values (the apply step's config_changed hashes a part).
    """

    jail: str  # "bwrap" | "none"
    jail_uid: int
    jail_binds: tuple[str, ...]
    patch_timeout: float
    max_processes: int
    max_memory_mb: int
    output_cap_mb: float
    strip: int | None
    all_gates: bool
    keep_going: bool
    allow_gates_fail: bool
    baseline: bool
    allow_undeclared: bool
    allow_untouched: bool
    allow_noop: bool
    tool_env: str  # the tool environment's folder (tool_bin's parent)

    @classmethod
    def from_config(cls, cfg: config.Config) -> Settings:
        values = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name != "tool_env"}
        values["jail_binds"] = tuple(values["jail_binds"])
        return cls(**values, tool_env=os.path.dirname(cfg.tool_bin))

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "jail_binds": list(self.jail_binds)}


def settings_of(cfg: config.Config) -> Settings:
    """The plain values actions need (picklable for doit -P process)."""
    return Settings.from_config(cfg)
