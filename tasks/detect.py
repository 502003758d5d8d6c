"""The default gates: what the live repository itself uses, each with the reason it was chosen.

When ``patchgate.yaml`` sets no ``gates:``, the gates are detected from the project's own
configuration — ``pyproject.toml``, ``setup.cfg``, ``tox.ini``, ``ruff.toml``/``.ruff.toml``,
``mypy.ini``, ``.flake8``, ``pytest.ini``, ``.pre-commit-config.yaml``, ``requirements-dev.txt``
(and its usual spellings) — and from the tools
installed in ``tool_env`` (only when ``tool_env`` is set: patchgate's own environment says
nothing about the project):

* ``black`` (a fixer, like ``ruff-format``) where the project uses black;
* ``ruff-format`` where it formats with ruff (a ``[format]`` section, a hook, a tox command);
* ``ruff`` where it configures or runs ruff; ``flake8`` where flake8 is configured;
* ``mypy`` where it is configured, run by tox or pre-commit, or installed in ``tool_env``;
* ``pytest`` where it has tests (``tests/``, ``test/``, ``test_*.py``) or configures pytest.

A formatter the project does not use never runs. Detection runs whenever a command loads its
tasks: it reads a handful of small files, and a process remembers the answer for as long as
those files are unchanged (their size and mtime are the key).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import configparser

# Files whose content decides the gates (the cache key is their stat).
CONFIG_FILES = (
    "pyproject.toml",
    "setup.cfg",
    "tox.ini",
    "ruff.toml",
    ".ruff.toml",
    "mypy.ini",
    ".mypy.ini",
    ".flake8",
    "pytest.ini",
    ".pytest.ini",
    ".pre-commit-config.yaml",
    "requirements-dev.txt",
    "requirements_dev.txt",
    "dev-requirements.txt",
    "requirements/dev.txt",
)
PY_FILES = ["*.py", "*.pyi"]
# Folders never searched for test files.
SKIP_DIRS = frozenset(
    {"node_modules", "venv", "env", "build", "dist", "site-packages", "__pycache__", "patches"}
)
TEST_FILE = re.compile(r"^(test_.*|.*_test)\.py$")
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class Detected(NamedTuple):
    """One detected gate and why it was chosen."""

    gate: dict[str, Any]
    reason: str


class Evidence(NamedTuple):
    """What the repository's files say it uses: tool name -> where that was seen, and the
    arguments tox.ini runs a tool with (``{posargs:DEFAULT}`` read as DEFAULT)."""

    tools: dict[str, str]
    tox_args: dict[str, list[str]]


def _gates() -> dict[str, dict[str, Any]]:
    from .config import DEFAULT_GATES  # the ruff-format, ruff, mypy and pytest gates

    gates = {g["name"]: copy.deepcopy(g) for g in DEFAULT_GATES}
    # The worktree gates judge is read-only: coverage (pytest-cov in a project's addopts, as
    # semver has) writes its data file in the gate's own folder instead.
    gates["pytest"]["env"] = {"COVERAGE_FILE": "{cache}/.coverage"}
    gates["black"] = {"name": "black", "command": ["black", "-q", "{files}"], "files": PY_FILES}
    gates["black"]["fixes"] = True
    gates["flake8"] = {"name": "flake8", "command": ["flake8", "{files}"], "files": PY_FILES}
    return gates


ORDER = ("black", "ruff-format", "ruff", "flake8", "mypy", "pytest")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _ini(text: str) -> configparser.ConfigParser | None:
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    return parser


def _requirement_names(values: Any) -> set[str]:
    """Distribution names in a list (or mapping of lists) of requirement strings."""
    names: set[str] = set()
    if isinstance(values, dict):
        for value in values.values():
            names |= _requirement_names(value)
    elif isinstance(values, list):
        for value in values:
            names |= _requirement_names(value)
    elif isinstance(values, str):
        for line in values.splitlines():
            found = REQUIREMENT.match(line)
            if found:
                names.add(found.group(1).lower().replace("_", "-"))
    return names


def _note(tools: dict[str, str], tool: str, where: str) -> None:
    tools.setdefault(tool, where)


def _from_pyproject(text: str, tools: dict[str, str]) -> None:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        return
    for name in ("black", "ruff", "mypy", "flake8"):
        if name in tool:
            _note(tools, name, f"pyproject.toml has [tool.{name}]")
    ruff = tool.get("ruff")
    if isinstance(ruff, dict) and "format" in ruff:
        _note(tools, "ruff-format", "pyproject.toml has [tool.ruff.format]")
    if "pytest" in tool:
        _note(tools, "pytest", "pyproject.toml has [tool.pytest.ini_options]")
    project = data.get("project", {})
    extras = project.get("optional-dependencies", {}) if isinstance(project, dict) else {}
    for where, values in (
        ("pyproject.toml [project.optional-dependencies]", extras),
        ("pyproject.toml [dependency-groups]", data.get("dependency-groups", {})),
    ):
        names = _requirement_names(values)
        for name in ("black", "ruff", "flake8", "mypy"):
            if name in names:
                _note(tools, name, f"{where} lists {name}")


def _from_ini(name: str, text: str, tools: dict[str, str], tox_args: dict[str, list[str]]) -> None:
    parser = _ini(text)
    if parser is None:
        return
    sections = set(parser.sections())
    if "flake8" in sections:
        _note(tools, "flake8", f"{name} has [flake8]")
    if "mypy" in sections or any(s.startswith("mypy-") for s in sections):
        _note(tools, "mypy", f"{name} has [mypy]")
    if sections & {"tool:pytest", "pytest"}:
        _note(tools, "pytest", f"{name} configures pytest")
    if name == "setup.cfg" and parser.has_section("options.extras_require"):
        extras = [value for _, value in parser.items("options.extras_require")]
        for tool in ("black", "ruff", "flake8", "mypy"):
            if tool in _requirement_names(extras):
                _note(tools, tool, f"setup.cfg [options.extras_require] lists {tool}")
    if name != "tox.ini":
        return
    for section in parser.sections():
        for key in ("commands", "commands_pre"):
            if not parser.has_option(section, key):
                continue
            for line in parser.get(section, key).splitlines():
                words = line.split()
                if not words:
                    continue
                first = os.path.basename(words[0])
                if first in ("python", "python3") and words[1:2] == ["-m"] and len(words) > 2:
                    first, words = words[2], words[2:]
                if first == "ruff" and words[1:2] == ["format"]:
                    _note(tools, "ruff-format", f"tox.ini [{section}] runs ruff format")
                elif first in ("black", "ruff", "flake8", "mypy", "pytest"):
                    _note(tools, first, f"tox.ini [{section}] runs {first}")
                    expanded = re.sub(r"\{posargs:([^}]*)\}", r"\1", " ".join(words[1:]))
                    tox_args.setdefault(first, expanded.replace("{posargs}", "").split())


PRE_COMMIT_HOOKS = {
    "black": "black",
    "black-jupyter": "black",
    "ruff": "ruff",
    "ruff-check": "ruff",
    "ruff-format": "ruff-format",
    "flake8": "flake8",
    "mypy": "mypy",
}


def _from_pre_commit(text: str, tools: dict[str, str]) -> None:
    # Read as text, not YAML: hook ids are plain `- id: NAME` lines, and PyYAML would cost more
    # to import than the rest of detection.
    for found in re.finditer(r"^\s*-?\s*id:\s*['\"]?([A-Za-z0-9_-]+)", text, re.M):
        tool = PRE_COMMIT_HOOKS.get(found.group(1))
        if tool:
            _note(tools, tool, f".pre-commit-config.yaml has the {found.group(1)} hook")


def evidence(live: str) -> Evidence:
    """What the repository's configuration files say it uses."""
    tools: dict[str, str] = {}
    tox_args: dict[str, list[str]] = {}
    for name in CONFIG_FILES:
        text = _read(os.path.join(live, name))
        if text is None:
            continue
        if name == "pyproject.toml":
            _from_pyproject(text, tools)
        elif name in ("setup.cfg", "tox.ini"):
            _from_ini(name, text, tools, tox_args)
        elif name in ("ruff.toml", ".ruff.toml"):
            import tomllib

            _note(tools, "ruff", f"{name} exists")
            try:
                if "format" in tomllib.loads(text):
                    _note(tools, "ruff-format", f"{name} has [format]")
            except tomllib.TOMLDecodeError:
                pass
        elif name in ("mypy.ini", ".mypy.ini", ".flake8"):
            _note(tools, "mypy" if "mypy" in name else "flake8", f"{name} exists")
        elif name in ("pytest.ini", ".pytest.ini"):
            _note(tools, "pytest", f"{name} exists")
        elif name.endswith(".txt"):
            listed = _requirement_names(text)
            for tool in ("black", "ruff", "flake8", "mypy"):
                if tool in listed:
                    _note(tools, tool, f"{name} lists {tool}")
        else:
            _from_pre_commit(text, tools)
    return Evidence(tools, tox_args)


def find_tests(live: str, depth: int = 3, limit: int = 5000) -> str | None:
    """Where the repository has tests: a tests/ folder or a test_*.py file (shallow search)."""
    for folder in ("tests", "test"):
        if os.path.isdir(os.path.join(live, folder)):
            return f"{folder}/"
    seen = 0
    stack = [(live, 0)]
    while stack:
        top, level = stack.pop()
        try:
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > limit:
                return None
            if entry.name.startswith(".") or entry.name in SKIP_DIRS:
                continue
            if entry.is_dir(follow_symlinks=False):
                if level + 1 < depth:
                    stack.append((entry.path, level + 1))
            elif TEST_FILE.match(entry.name):
                return os.path.relpath(entry.path, live)
    return None


def detect_gates(live: str, tool_bin: str | None) -> list[Detected]:
    """The gates the repository uses, in running order (fixers first), each with its reason.

    ``tool_bin`` is the bin/ folder of an explicitly configured ``tool_env`` (None otherwise):
    a tool installed there counts for mypy, and a configured tool missing there is noted.
    """
    key = _key(live, tool_bin)
    if key in _CACHE:
        return _CACHE[key]
    seen = evidence(live)
    found = seen.tools
    if "pytest" not in found:
        tests = find_tests(live)
        if tests:
            found["pytest"] = f"the repository has tests ({tests})"
    elif (tests := find_tests(live)) is not None:
        found["pytest"] = f"the repository has tests ({tests}); {found['pytest']}"
    if "mypy" not in found and tool_bin and os.path.exists(os.path.join(tool_bin, "mypy")):
        found["mypy"] = "mypy is installed in tool_env"
    gates = _gates()
    detected = []
    for name in ORDER:
        if name not in found:
            continue
        reason = found[name]
        program = "ruff" if name == "ruff-format" else name
        if tool_bin and name != "pytest" and not os.path.exists(os.path.join(tool_bin, program)):
            reason += f" (note: {program} is not installed in tool_env)"
        gate = gates[name]
        if name == "mypy" and "tox.ini" in reason and seen.tox_args.get("mypy"):
            gate, reason = _as_tox_runs_mypy(gate, reason, seen.tox_args["mypy"], live)
        detected.append(Detected(gate, reason))
    _CACHE[key] = detected
    return detected


def _as_tox_runs_mypy(
    gate: dict[str, Any], reason: str, args: list[str], live: str
) -> tuple[dict[str, Any], str]:
    """mypy with tox's options, on the changed files inside the paths tox checks.

    semver's tox.ini runs ``mypy --ignore-missing-imports --check-untyped-defs src``: its tests
    are never type-checked, so a gate checking them would refuse its own upstream releases.
    A word naming an existing path of live is a path; every other word is an option.
    """
    paths = [a.rstrip("/") for a in args if not a.startswith("-") and _exists(live, a)]
    options = [a for a in args if a.rstrip("/") not in paths]
    gate = dict(gate)
    at = gate["command"].index("{files}")
    gate["command"] = [*gate["command"][:at], *options, *gate["command"][at:]]
    if paths and "." not in paths:
        globs = (
            [f"{p}/*.py", f"{p}/*.pyi"] if os.path.isdir(os.path.join(live, p)) else [p]
            for p in paths
        )
        gate["files"] = [g for group in globs for g in group]
        reason += f" on {', '.join(paths)}"
    return gate, reason


def _exists(live: str, path: str) -> bool:
    return os.path.exists(os.path.join(live, path))


_CACHE: dict[tuple[Any, ...], list[Detected]] = {}


def cached(live: str, tool_bin: str | None, cache: str) -> list[Detected]:
    """detect_gates, remembered in the file ``cache`` across processes: a command that loads
    its tasks pays a few stat calls, not the parsing (nor the imports of tomllib and
    configparser), while the configuration files are unchanged."""
    key = json.dumps(_key(live, tool_bin))
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(cache, encoding="utf-8") as fh:
            data = json.load(fh)
        if data["key"] == key:
            return [Detected(d["gate"], d["reason"]) for d in data["gates"]]
    detected = detect_gates(live, tool_bin)
    with contextlib.suppress(OSError):  # a read-only project still works, only slower
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"key": key, "gates": [d._asdict() for d in detected]}, fh)
        os.replace(tmp, cache)
    return detected


def _key(live: str, tool_bin: str | None) -> tuple[Any, ...]:
    stats: list[Any] = [live, tool_bin]
    for name in (*CONFIG_FILES, "tests", "test", "."):
        try:
            st = os.stat(os.path.join(live, name))
            stats.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append(None)
    return tuple(stats)


def describe(detected: list[Detected]) -> str:
    """`doit config`'s lines for the detected gates."""
    if not detected:
        return "# detected gates: none (no tool configuration and no tests found in live)"
    lines = ["# detected gates (patchgate.yaml sets no gates:), in running order:"]
    for gate, reason in detected:
        command = " ".join(gate["command"])
        lines.append(f"#   {gate['name']:<12} {reason}; runs: {command}")
    return "\n".join(lines)
