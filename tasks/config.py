"""patchgate.yaml: defaults, the file and command-line variables, each value with its source."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from . import report
from .doitapi import command_line
from .errors import PatchgateError
from .schema import SCHEMA_DIR, validate

CONFIG_FILE = "patchgate.yaml"
CONFIG_CACHE = os.path.join("patches", ".state", "config-cache.json")
# The schema's own content is part of what was validated: a new schema checks the file again.
with open(os.path.join(SCHEMA_DIR, "config.schema.json"), "rb") as _schema:
    SCHEMA_VERSION = hashlib.sha256(_schema.read()).hexdigest()

DEFAULT_GATES: list[dict[str, Any]] = [
    {
        "name": "ruff-format",
        "command": ["ruff", "format", "--no-cache", "{files}"],
        "files": ["*.py", "*.pyi"],
        "fixes": True,
    },
    {
        "name": "ruff",
        "command": ["ruff", "check", "--no-cache", "{files}"],
        "files": ["*.py", "*.pyi"],
    },
    {
        "name": "mypy",
        "command": ["mypy", "--cache-dir", "{cache}", "--no-error-summary", "{files}"],
        "files": ["*.py", "*.pyi"],
    },
    {
        "name": "pytest",
        "command": [
            "{python}",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--junitxml={junit}",
        ],
        "files": ["*.py"],
        "junit": True,
    },
]


@dataclass(frozen=True)
class Gate:
    """One gate as verify runs it, every default filled in: a ``gates:`` entry, a detected
    gate, an Atlas ``build``/``test-N`` or a claimed ``model-test-N`` (claims.py). Built once
    by ``from_json`` (like pre-commit's ``Hook.create``); picklable for doit -P process.
    ``to_json`` is the dict the gate was before it was a record: the digests of a gate's
    up-to-date check and of its baseline cache hash it.
    """

    name: str
    command: tuple[str, ...]
    files: tuple[str, ...] = ("*",)
    timeout: float = 600
    env: dict[str, str] = field(default_factory=dict)
    fixes: bool = False
    junit: bool = False
    build: bool = False  # issue 11: a writable, throwaway view of the worktree
    atlas: str | None = None  # "build" | "test": an Atlas build_command / test_commands gate

    @classmethod
    def from_json(cls, data: Mapping[str, Any], gate_timeout: float) -> Gate:
        """The gate of a JSON/YAML mapping; a missing timeout is ``gate_timeout``. A key of the
        wrong type, or one no gate has, is refused (CONFIG) naming the gate."""
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise PatchgateError("CONFIG", f"a gate has no name ({dict(data)!r}); name every gate")
        unknown = sorted(set(data) - GATE_KEYS)
        if unknown:
            raise PatchgateError(
                "CONFIG",
                f"gate {name!r} has the unknown key {unknown[0]!r}; known keys: "
                f"{', '.join(sorted(GATE_KEYS))}",
            )
        values = {k: data.get(k, GATE_DEFAULTS.get(k)) for k in GATE_KEYS - {"name"}}
        if "timeout" not in data:
            values["timeout"] = gate_timeout
        problem = _gate_problem(values)
        if problem:
            raise PatchgateError("CONFIG", f"gate {name!r}: {problem}; fix the gate")
        return cls(
            name=name,
            command=tuple(values["command"]),
            files=tuple(values["files"]),
            timeout=values["timeout"],
            env=dict(values["env"]),
            fixes=values["fixes"],
            junit=values["junit"],
            build=values["build"],
            atlas=values["atlas"],
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "command": list(self.command),
            "files": list(self.files),
            "fixes": self.fixes,
            "junit": self.junit,
            "build": self.build,
            "env": dict(self.env),
            "timeout": self.timeout,
        }
        if self.atlas is not None:
            data["atlas"] = self.atlas
        return data


GATE_KEYS = frozenset(f.name for f in fields(Gate))


GATE_DEFAULTS: dict[str, Any] = {
    "files": ["*"],
    "env": {},
    "fixes": False,
    "junit": False,
    "build": False,
    "atlas": None,
}


def _strings(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def _gate_problem(values: dict[str, Any]) -> str | None:
    """What is wrong with a gate's values (Gate.from_json), or None."""
    timeout, env = values["timeout"], values["env"]
    if not _strings(values["command"]) or not values["command"]:
        return "command must be a non-empty list of strings"
    if not _strings(values["files"]):
        return "files must be a list of strings"
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        return "timeout must be a number above 0"
    if not isinstance(env, dict) or not _strings([*env, *env.values()]):
        return "env must map names to strings"
    for key in ("fixes", "junit", "build"):
        if not isinstance(values[key], bool):
            return f"{key} must be true or false"
    if values["atlas"] not in (None, "build", "test"):
        return "atlas must be build or test"
    return None


# key: (default, what it means). docs/configuration.md's reference is this table.
DEFAULTS: dict[str, tuple[Any, str]] = {
    "live_repo": (".", "the repository being patched (relative to the project folder)"),
    "branch": (None, "branch promote lands on; null: live's current branch"),
    "remote": ("origin", "remote promote pushes to; null: no push (PUSH: SKIPPED)"),
    "jail": (
        "bwrap",
        "bwrap: patches and gates run in bubblewrap; none: unjailed (trusted setups)",
    ),
    "jail_uid": (1000, "uid/gid the jail runs as when patchgate runs as root"),
    "jail_binds": ([], "extra host paths bound read-only into the jail (e.g. a toolchain)"),
    "tool_env": (None, "virtual environment the gate tools come from; null: patchgate's own"),
    "patch_timeout": (300, "seconds a patch script or git apply may run"),
    "gate_timeout": (600, "seconds a gate may run unless the gate sets its own timeout"),
    "git_timeout": (120, "seconds a git command may run"),
    "max_processes": (512, "process cap inside the jail (RLIMIT_NPROC)"),
    "max_memory_mb": (4096, "address-space cap of each jailed process, MiB"),
    "output_cap_mb": (10, "output kept per step; the rest is cut with a marker"),
    "strip": (None, "strip level for unified diffs; null: inferred"),
    "allow_undeclared": (False, "allow changed paths not declared in FILES"),
    "allow_untouched": (False, "allow declared FILES the patch did not change"),
    "allow_noop": (False, "allow a patch that changes nothing"),
    "all_gates": (False, "run every gate, not only those whose files the patch changed"),
    "keep_going": (False, "run all gates after a failure and report every failure"),
    "allow_gates_fail": (False, "let verification pass with gate failures recorded"),
    "baseline": (False, "judge only what the patch changed: compare gates with the base"),
    "gates": (DEFAULT_GATES, "gate list: name, command, files, timeout, env, fixes, junit"),
    "build_command": (None, "Atlas build command, run as the gate 'build'"),
    "test_commands": ([], "Atlas test commands, run as the gates 'test-1', 'test-2', ..."),
    "live_gates": ([], "gate names re-run on live after promotion, before the commit"),
    "commit_message": ("patchgate: {issue}", "commit subject when promote gets no message="),
    "co_authored_by": (None, "Co-authored-by trailer on promote commits"),
    "operator": (None, "default operator name for promote and rollback"),
    "require_push": (False, "a failed push fails the promotion"),
    "live_changed": (
        "fail",
        "live moved in a patched file: fail, overwrite_live, overwrite_workspace or rebase",
    ),
    "skip_up_to_date": (False, "promote even when the remote is ahead of live"),
    "fast_forward": (True, "fast-forward live when it is only behind the remote"),
    "keep": (False, "keep the workspace after a successful promotion"),
    "audit_command": (None, "command run on live after a successful promotion (STAGE: AUDIT)"),
    # --- issue 11, item 9 (docs/small-gaps.md) ---
    "audit_after_promote": (
        True,
        "after a promotion, run doit audit's check on live (STAGE: AUDIT on a violation)",
    ),
    # --- issue 11 (verdicts): Atlas timeouts of the build and test-N gates ---
    "build_timeout": (None, "seconds the build gate may run; null: gate_timeout"),
    "test_timeout": (None, "seconds each test-N gate may run; null: gate_timeout"),
    # --- issue 14: doit propose (tasks/llm.py, tasks/propose.py; docs/propose.md) ---
    "llm": (
        {
            "endpoint": "http://127.0.0.1:8080/v1",
            "model": "local",
            "api_key_env": None,
            "timeout": 120,
            "max_retries": 3,
            "max_requeries": 2,
            "retry_on_transient_errors": True,
            "transport_retries": 3,
            "backoff_seconds": 1.0,
            "context_budget": 24000,
            "response_format": "auto",
            "allow_test_commands": False,
            "max_reply_bytes": 1048576,
            "temperature": None,
        },
        "doit propose: the OpenAI-compatible model endpoint and its budgets (docs/propose.md)",
    ),
    # --- issue 15: the forge, doit watch, time-based monitoring (docs/forge-and-watch.md) ---
    "forge": (
        None,
        "the forge (GitHub): kind, repository OWNER/NAME, api_url, token_env, tag_on_rollback, "
        "commit_status, timeout, retries, max_wait; null: none",
    ),
    "landing": (
        "push",
        "push: promote pushes to the branch; pull_request: to patchgate/ISSUE, and opens a PR",
    ),
    "watch": (
        {
            "enabled": True,
            "shadow": False,
            "window_hours": 24,
            "interval": 300,
            "reruns": 2,
            "consecutive": 3,
            "max_proposals": 3,
            "proposal_window_hours": 24,
        },
        "doit watch: CI of landed commits; a red needs reruns red runs or consecutive red polls; "
        "at most max_proposals proposals per proposal_window_hours (0: no limit)",
    ),
    "monitoring": (
        {
            "enabled": False,
            "kind": "prometheus",
            "url": None,
            "query": None,
            "key_path": None,
            "stability_threshold": None,
            "failure_limit": 3,
            "inconclusive_limit": 5,
            "interval": 60,
            "window_hours": 2,
            "timeout": 10,
        },
        "doit watch: a stability metric after a landing (prometheus query or json key_path)",
    ),
    # --- issue 16: the operator console (doit ui) ---
    "ui": (
        {
            "host": "127.0.0.1",
            "port": 8765,
            "read_only": False,
            "print_token": True,
            "operators": {},
        },
        "doit ui: host, port, read_only, print_token, operators (name: scrypt hash)",
    ),
    # issue 17: verification on a Dask cluster (tasks/cluster.py, docs/cluster.md)
    "executor": ("local", "where verify runs: local (doit here) or dask (a Dask cluster)"),
    "scheduler": (None, "Dask scheduler address tcp://HOST:8786; null: an embedded LocalCluster"),
}

BOOLEAN_KEYS = tuple(k for k, (v, _) in DEFAULTS.items() if isinstance(v, bool))
CHOICE_KEYS = {
    "jail": ("bwrap", "none"),
    "live_changed": ("fail", "overwrite_live", "overwrite_workspace", "rebase"),
}
INTEGER_KEYS = ("strip",)
STRING_KEYS: tuple[str, ...] = ("operator", "branch", "remote")
# Variables that are not configuration: they name what a command acts on.
COMMAND_VARIABLES = (
    "patch",
    "issue",
    "message",
    "sha",
    "confirm",
    "reason",
    "event",
    "last_good",
    "n",
    "latest",  # issue 11: doit verify latest=1 re-runs the newest patch in patches/
    # issue 14: doit propose
    "request",
    "files",
    "trigger",  # issues 14, 15: what asked for it (github:NUMBER: the forge issue annotated)
    "once",  # issue 15: doit watch once=1
    "allow_protected",  # issue 12: patchgate's own files; the command line only, never the file
)
# issue 17: the cluster executor's command-line variables (executor=dask scheduler=tcp://…).
CHOICE_KEYS["executor"] = ("local", "dask")
STRING_KEYS += ("scheduler",)
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Config:
    root: str
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def live_repo(self) -> str:
        return os.path.normpath(os.path.join(self.root, self.values["live_repo"]))

    @property
    def tool_bin(self) -> str:
        env = self.values["tool_env"] or sys.prefix
        return os.path.join(os.path.abspath(os.path.join(self.root, env)), "bin")


def read_file(root: str) -> dict[str, Any]:
    """patchgate.yaml parsed and schema-checked; {} when there is none."""
    path = os.path.join(root, CONFIG_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as fh:
        raw = fh.read()
    digest = hashlib.sha256(raw + SCHEMA_VERSION.encode()).hexdigest()
    cache = os.path.join(root, CONFIG_CACHE)
    # PyYAML and jsonschema cost more to import than a whole no-op rerun of verify: content
    # that was parsed and validated before is read back from the cache instead.
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(cache, encoding="utf-8") as fh:
            cached = json.load(fh)
        if cached["digest"] == digest:
            data: dict[str, Any] = cached["data"]
            return data
    data = parse(raw)
    with contextlib.suppress(OSError):  # a read-only project still works, only slower
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"digest": digest, "data": data}, fh)
        os.replace(tmp, cache)
    return data


# issue 12: an anchor bomb (a billion laughs) or deep nesting must not hang or crash the parse.
YAML_MAX_ALIASES = 100
YAML_MAX_DEPTH = 32
YAML_MAX_NODES = 100_000  # counted with every alias expanded


def _limited_yaml(raw: bytes) -> Any:
    """yaml.safe_load with limits on aliases, nesting and expanded size: one CONFIG line.

    Syntax errors are yaml.YAMLError, worded by ``parse``.
    """
    from . import yamllimits

    try:
        return yamllimits.load(raw, YAML_MAX_ALIASES, YAML_MAX_DEPTH, YAML_MAX_NODES)
    except yamllimits.TooBig as exc:
        raise PatchgateError("CONFIG", f"{CONFIG_FILE}: {exc}; write it out plainly") from None
    except (RecursionError, MemoryError):
        raise PatchgateError(
            "CONFIG", f"{CONFIG_FILE} is nested too deeply to read; write it out plainly"
        ) from None


def parse(raw: bytes) -> dict[str, Any]:
    import yaml  # see read_file: only for content not seen before

    try:
        data = _limited_yaml(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PatchgateError("CONFIG", f"{CONFIG_FILE}{where} is not valid YAML; fix it") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PatchgateError(
            "CONFIG", f"{CONFIG_FILE} must be a mapping of keys to values; write key: value lines"
        )
    for key in ("build_command", "audit_command"):
        if isinstance(data.get(key), str):
            data[key] = shlex.split(data[key])
    if isinstance(data.get("test_commands"), list):
        data["test_commands"] = [
            shlex.split(c) if isinstance(c, str) else c for c in data["test_commands"]
        ]
    validate(data, "config.schema.json", "CONFIG", f"{CONFIG_FILE} is invalid at")
    names = [g["name"] for g in data.get("gates", [])]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PatchgateError(
            "CONFIG",
            f"{CONFIG_FILE}: gates: duplicate gate name {dupes[0]!r}; give every gate its own name",
        )
    for gate in data.get("gates", []):  # issue 11: a build's writes are thrown away
        if gate.get("build") and gate.get("fixes"):
            raise PatchgateError(
                "CONFIG",
                f"{CONFIG_FILE}: gates: {gate['name']!r} has both build and fixes, but what a "
                "build gate writes is thrown away; drop one of them",
            )
    return data


def parse_variable(key: str, raw: str) -> Any:
    """A command-line value for a config key, or a one-line error that shows what is allowed."""
    if key in BOOLEAN_KEYS:
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise PatchgateError(
            "PREFLIGHT", f"{key}={raw} is not a yes/no value; use {key}=1 or {key}=0"
        )
    if key in CHOICE_KEYS:
        if raw not in CHOICE_KEYS[key]:
            raise PatchgateError(
                "PREFLIGHT",
                f"{key}={raw} is not one of {', '.join(CHOICE_KEYS[key])}; pick one of them",
            )
        return raw
    if key in INTEGER_KEYS:
        if not raw.isdigit():
            raise PatchgateError(
                "PREFLIGHT", f"{key}={raw} must be a whole number; use e.g. {key}=1"
            )
        return int(raw)
    return raw


def variable(name: str, default: str | None = None) -> str | None:
    value = command_line().get(name)
    return default if value in (None, "") else value


def load(root: str, cli: Mapping[str, str] | None = None) -> Config:
    """The effective configuration: defaults, then patchgate.yaml, then command-line variables."""
    from_command_line = cli is None
    cli = command_line() if cli is None else dict(cli)
    values = {k: v for k, (v, _) in DEFAULTS.items()}
    sources = dict.fromkeys(values, "default")
    for key, value in read_file(root).items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}  # a nested section (llm:): keys left out keep defaults
        values[key], sources[key] = value, CONFIG_FILE
    cli_keys = BOOLEAN_KEYS + tuple(CHOICE_KEYS) + INTEGER_KEYS + STRING_KEYS
    for key, raw in cli.items():
        if key in cli_keys:
            values[key], sources[key] = parse_variable(key, raw), "command line"
        elif key not in COMMAND_VARIABLES:
            known = ", ".join(sorted(cli_keys + COMMAND_VARIABLES))
            raise PatchgateError("PREFLIGHT", f"unknown variable {key}=; known variables: {known}")
    cfg = Config(os.path.abspath(root), values, sources)
    if from_command_line:  # this run's configuration: every run log starts with it
        report.set_header(cfg.root, log_header(cfg))
    return cfg


# --- the run log's header (issue 11): this run's configuration, secrets redacted ---------------

SECRET_NAME = re.compile(r"(?i)(token|secret|passw|api_?key|credential|private_?key)")
URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
REDACTED = "***"


def redacted(value: Any, name: str = "") -> Any:
    """``value`` with secrets replaced: values of secret-named keys, URL userinfo."""
    if isinstance(value, dict):
        return {k: redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, name) for v in value]
    if value is not None and SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, str):
        return URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", value)
    return value


def log_header(cfg: Config) -> str:
    """What every run log starts with: the ``doit config`` view, secrets redacted (also the
    values of secret-named environment variables, wherever they appear)."""
    safe = Config(cfg.root, {k: redacted(v, k) for k, v in cfg.values.items()}, cfg.sources)
    text = show(safe)
    for name, value in os.environ.items():
        if SECRET_NAME.search(name) and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return f"# effective configuration of this run (doit config; secrets redacted)\n{text}\n#"


def effective_gates(cfg: Config) -> list[Gate]:
    """Configured gates plus the Atlas build/test commands as gates 'build' and 'test-N'."""
    gates = [dict(g) for g in cfg["gates"]]
    # issue 11: no `gates:` in patchgate.yaml -> the gates the live repository itself uses.
    if cfg.sources.get("gates") == "default":
        gates = [dict(d.gate) for d in detected_gates(cfg)]
    if cfg["build_command"]:
        gates.append(
            {
                "name": "build",
                "command": list(cfg["build_command"]),
                "files": ["*"],
                "atlas": "build",
                "build": True,  # issue 11: a writable, throwaway view of the worktree
                "timeout": cfg.values.get("build_timeout") or cfg["gate_timeout"],
            }
        )
    for i, command in enumerate(cfg["test_commands"], start=1):
        gates.append(
            {
                "name": f"test-{i}",
                "command": list(command),
                "files": ["*"],
                "atlas": "test",
                "timeout": cfg.values.get("test_timeout") or cfg["gate_timeout"],
            }
        )
    return [Gate.from_json(gate, cfg["gate_timeout"]) for gate in gates]


def detected_gates(cfg: Config) -> list[Any]:
    """issue 11: the gates detected from the live repository's own configuration (detect.py)."""
    from . import detect

    tool_bin = cfg.tool_bin if cfg.values["tool_env"] else None
    cache = os.path.join(cfg.root, "patches", ".state", "detected-gates.json")
    return detect.cached(cfg.live_repo, tool_bin, cache)


def show(cfg: Config) -> str:
    """The effective configuration, one key a line, with where each value came from."""
    width = max(len(k) for k in cfg.values)
    lines = [f"# project: {cfg.root}", f"# live repository: {cfg.live_repo}"]
    for key in DEFAULTS:
        value = json.dumps(cfg.values[key])
        if key == "gates" and cfg.sources[key] == "default":  # issue 11: detected, not fixed
            names = [d.gate["name"] for d in detected_gates(cfg)]
            lines.append(f"{key:<{width}}  {json.dumps(names)}  (detected, see below)")
            continue
        lines.append(f"{key:<{width}}  {value}  ({cfg.sources[key]})")
    if cfg.sources["gates"] == "default":
        from .detect import describe

        lines.append(describe(detected_gates(cfg)))
    return "\n".join(lines)


def reference() -> str:
    """The reference table of docs/configuration.md, from DEFAULTS (a test keeps them equal)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, (default, meaning) in DEFAULTS.items():
        shown = (
            "detected from the repository ([adopting.md](adopting.md))"
            if key == "gates"
            else f"`{json.dumps(default)}`"
        )
        rows.append(f"| `{key}` | {shown} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m patchgate.config --reference: refresh the docs' table
    import re
    import sys

    readme = os.path.join(os.path.dirname(SCHEMA_DIR), "docs", "configuration.md")
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    block = f"<!-- config-reference:begin -->\n{reference()}\n<!-- config-reference:end -->"
    text = re.sub(
        r"<!-- config-reference:begin -->.*<!-- config-reference:end -->", block, text, flags=re.S
    )
    with open(readme, "w", encoding="utf-8") as fh:
        fh.write(text)
    sys.exit(0)
