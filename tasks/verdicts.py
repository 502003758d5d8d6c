"""Right verdicts (issue 11): what a baseline may excuse, what a fixer may touch, what a test
imports.

Pure logic over texts and records, used by the gate steps in ``gates.py``:

* findings counted per (file, code, message): one more of a kind the file already had is new;
* a JUnit run in which no test ran never passes; a collection error is a failure of its file;
* a fixer's hunks are kept only where they touch lines the patch changed;
* a gate that runs the project's code has the workspace first on PYTHONPATH (``src/`` when it
  exists, then the root); an editable install of a renamed folder is linked to the workspace's
  folder; any other copy of the project installed into ``tool_env`` from live that would stand
  in for the workspace is named, and the gate fails.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import unquote, urlparse

EXCUSED = "excused"

# --- findings as counts ------------------------------------------------------------------------


class Finding(NamedTuple):
    path: str
    where: str  # "line" or "line:col"
    message: str  # the tool's message, code first when it has one ("C408 Unnecessary ...")

    @property
    def key(self) -> str:
        """What a baseline compares: file and message, not the line (lines move)."""
        return f"{self.path}: {self.message}"

    @property
    def line(self) -> int:
        return int(self.where.split(":")[0])

    def __str__(self) -> str:
        return f"{self.path}:{self.where}: {self.message}"


def new_findings(
    patch: Sequence[Finding], base_keys: Iterable[str], changed: Mapping[str, set[int]]
) -> list[tuple[Finding, int, int]]:
    """(finding, count on the patch, count on the base) for each finding the patch added.

    Compared as counts per (file, message): a file that had two C408 findings and now has three
    has one new one. Which of the three is "the new one" cannot be known from counts; the one on
    a line the patch changed (``changed``: path -> 1-based line numbers) is named first.
    """
    base = Counter(base_keys)
    by_key: dict[str, list[Finding]] = {}
    for found in patch:
        by_key.setdefault(found.key, []).append(found)
    new: list[tuple[Finding, int, int]] = []
    for key, seen in by_key.items():
        extra = len(seen) - base[key]
        if extra <= 0:
            continue
        lines = changed.get(seen[0].path, set())
        ranked = sorted(seen, key=lambda f: (f.line not in lines, seen.index(f)))
        new += [(f, len(seen), base[key]) for f in ranked[:extra]]
    new.sort(key=lambda item: (item[0].line not in changed.get(item[0].path, set()),))
    return new


def describe_new(found: Finding, count: int, on_base: int) -> str:
    """``src/a.py:153:5: C408 ... (new; not on the base)`` or, for one more of a known kind,
    ``(new: 3 in the file, 2 on the base)``."""
    if on_base == 0:
        return f"{found} (new; not on the base)"
    return f"{found} (new: {count} in the file, {on_base} on the base)"


# --- JUnit: which tests ran --------------------------------------------------------------------


def is_collection_error(test_id: str) -> bool:
    """A JUnit case naming a file, not a test: pytest's collection (import) error of that file."""
    return "::" not in test_id


def tests_that_ran(outcomes: Mapping[str, str]) -> list[str]:
    """Tests that passed or failed: not skipped ones, not collection errors (a case that passed
    counts whatever its id: some JUnit writers leave out the classname)."""
    return sorted(
        t
        for t, o in outcomes.items()
        if o == "pass" or (o == "fail" and not is_collection_error(t))
    )


def no_test_ran(name: str, tests: Mapping[str, tuple[str, str]]) -> str:
    """The reason a JUnit gate in which no test ran fails."""
    broken = sorted(t for t, (o, _) in tests.items() if o == "fail" and is_collection_error(t))
    skipped = sum(1 for o, _ in tests.values() if o == "skip")
    if broken:
        message = tests[broken[0]][1]
        said = f": {message}" if message else ""
        more = f" (+{len(broken) - 1} more)" if len(broken) > 1 else ""
        return (
            f"{name}: no test ran; {broken[0]} failed to collect{said}{more}; "
            "fix the import error (a collection error is a failure of that test file)"
        )
    if skipped:
        return (
            f"{name}: no test ran ({skipped} skipped); a gate in which every test skips "
            "checks nothing"
        )
    return f"{name}: no test ran (the JUnit file lists none); add tests or fix the gate's command"


# --- lines a patch changed ---------------------------------------------------------------------


def changed_lines(old: str | None, new: str) -> set[int]:
    """1-based numbers of the lines of ``new`` that ``old`` does not have (all, for a new file).

    A pure deletion marks the line after it (or the last line), so that a finding or fix right
    where something was removed counts as touching the change.
    """
    new_lines = new.splitlines(keepends=True)
    if old is None:
        return set(range(1, len(new_lines) + 1))
    matcher = difflib.SequenceMatcher(None, old.splitlines(keepends=True), new_lines, False)
    out: set[int] = set()
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            out.update(range(j1 + 1, j2 + 1))
        elif tag == "delete" and new_lines:
            out.add(min(j1 + 1, len(new_lines)))
    return out


# --- a fixer's edits, limited to the patch's lines ---------------------------------------------


class Limited(NamedTuple):
    text: str  # the fixed text with only the hunks that touch the patch's lines
    kept: int  # hunks of the fixer kept
    dropped: int  # hunks of the fixer dropped (they touched only lines the patch did not)


def limit_fix(base: str | None, patched: str, fixed: str) -> Limited:
    """The fixer's edit of ``patched`` (into ``fixed``) with only the hunks that overlap lines
    the patch changed from ``base``; the others are undone.

    A hunk overlaps when it replaces or deletes a patched line, or inserts right next to one
    (a blank line the formatter adds after a new function counts as part of that function).
    """
    touched = changed_lines(base, patched)
    old = patched.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(None, old, fixed.splitlines(keepends=True), False)
    out: list[str] = []
    kept = dropped = 0
    new = fixed.splitlines(keepends=True)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += old[i1:i2]
            continue
        # Lines of ``patched`` the hunk spans; an insertion spans its neighbours.
        span = set(range(i1 + 1, i2 + 1)) if i2 > i1 else {i1, i1 + 1}
        if span & touched:
            out += new[j1:j2]
            kept += 1
        else:
            out += old[i1:i2]
            dropped += 1
    return Limited("".join(out), kept, dropped)


# --- the workspace on the import path ----------------------------------------------------------


def import_roots(repo: str) -> list[str]:
    """The workspace folders Python must import the project from: ``src/`` when there is one
    (the src layout), then the root (a flat layout; also what ``python -m pytest`` adds)."""
    src = os.path.join(repo, "src")
    roots = [src] if os.path.isdir(src) and not os.path.islink(src) else []
    return [*roots, repo]


def python_path(repo: str, own: str | None, extra: Sequence[str] = ()) -> str:
    """PYTHONPATH for a gate: the gate's own entries (its ``env:``) first, then ``mapped`` (the
    folder of plan_imports' links, if any), then the workspace."""
    parts = [p for p in (own or "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys([*parts, *extra, *import_roots(repo)]))


class Installed(NamedTuple):
    name: str  # the top-level import name
    where: str  # what Python would import (a folder in site-packages, or an editable's source)
    source: str  # the folder it was installed from (direct_url.json)
    editable: bool


def installed_from(tool_env: str, project: str) -> list[Installed]:
    """Top-level packages of ``tool_env`` installed from ``project`` (or a folder in it), as
    pip records it in each distribution's ``direct_url.json``."""
    found: list[Installed] = []
    project = os.path.realpath(project)
    for site in _site_packages(tool_env):
        for entry in sorted(os.listdir(site)):
            if not entry.endswith(".dist-info"):
                continue
            info = os.path.join(site, entry)
            source, editable = _direct_url(info)
            if source is None:
                continue
            real = os.path.realpath(source)
            if os.path.commonpath([real, project]) != project:
                continue
            for name in _top_level(info):
                where = _editable_target(site, name, real) if editable else None
                found.append(Installed(name, where or os.path.join(site, name), source, editable))
    return found


class ImportPlan(NamedTuple):
    """How a gate imports the project: names to map onto workspace folders, copies in the way."""

    mapped: dict[str, str]  # import name -> the workspace folder (or module file) it is
    shadowing: list[Installed]  # copies that would be imported instead of the workspace


def plan_imports(
    repo: str, installed: Iterable[Installed], live: str | None, own: str | None = None
) -> ImportPlan:
    """What PYTHONPATH (src/, the root) leaves to do for the project's own installs.

    * the workspace has the package in src/ or its root: PYTHONPATH puts it first; nothing;
    * an editable install maps the name onto a folder of live named otherwise (setuptools'
      ``package_dir``, e.g. ``patchgate`` -> ``tasks/``): that folder of the workspace is mapped
      to the name (a link in a folder put on PYTHONPATH);
    * anything else installed from live (a regular install, or the package in a folder that
      is not on PYTHONPATH) would stand in for the workspace: named, and the gate fails.
    """
    given = [os.path.join(repo, p) for p in (own or "").split(os.pathsep) if p]
    roots = [*given, *import_roots(repo)]
    mapped: dict[str, str] = {}
    shadow: list[Installed] = []
    for copy in installed:
        if any(_provides(root, copy.name) for root in roots):
            continue
        if copy.editable and live and _inside(live, copy.where):
            twin = os.path.join(repo, os.path.relpath(copy.where, live))
            if os.path.lexists(twin):
                mapped[copy.name] = twin
            continue  # no twin: the import fails inside the jail, visibly
        shadow.append(copy)
    return ImportPlan(mapped, shadow)


def link_imports(folder: str, mapped: Mapping[str, str]) -> None:
    """Make ``folder`` hold one link per mapped name (``name`` or ``name.py``) and nothing else.

    It lies in the gate's own (writable) cache folder: whatever a gate left there, a folder, a
    file, a link in its place, is removed first, never followed."""
    if os.path.isdir(folder) and not os.path.islink(folder):
        shutil.rmtree(folder)
    elif os.path.lexists(folder):
        os.unlink(folder)
    os.mkdir(folder)
    for name, target in sorted(mapped.items()):
        link = name + ".py" if target.endswith(".py") and os.path.isfile(target) else name
        os.symlink(target, os.path.join(folder, link))


def _inside(outer: str, inner: str) -> bool:
    real, path = os.path.realpath(outer), os.path.realpath(inner)
    return os.path.commonpath([real, path]) == real


def shadow_reason(name: str, repo: str, copies: Sequence[Installed]) -> str:
    copy = copies[0]
    how = "an editable install" if copy.editable else "an installed copy"
    inside = _anywhere(repo, copy.name)
    theirs = (
        f"the workspace's {os.path.relpath(inside, repo)}"
        if inside
        else f"the workspace's code (it has no {copy.name}/ in src/ or its root)"
    )
    return (
        f"{name}: {how} of {copy.name!r} ({copy.where}, from {copy.source}) would be imported "
        f"instead of {theirs}; install the project editable (pip install -e) or uninstall it "
        "from tool_env, or put the package's folder on the gate's env PYTHONPATH"
    )


def _provides(root: str, name: str) -> bool:
    return os.path.isdir(os.path.join(root, name)) or os.path.isfile(
        os.path.join(root, f"{name}.py")
    )


def _anywhere(repo: str, name: str, depth: int = 3) -> str | None:
    """The workspace's package ``name`` (a folder with __init__.py) within ``depth`` levels."""
    for dirpath, dirnames, _ in os.walk(repo):
        level = os.path.relpath(dirpath, repo).count(os.sep)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        if level >= depth:
            dirnames[:] = []
        if name in dirnames and os.path.isfile(os.path.join(dirpath, name, "__init__.py")):
            return os.path.join(dirpath, name)
    return None


def _site_packages(tool_env: str) -> list[str]:
    lib = os.path.join(tool_env, "lib")
    try:
        versions = sorted(os.listdir(lib))
    except OSError:
        return []
    out = [os.path.join(lib, v, "site-packages") for v in versions if v.startswith("python")]
    return [p for p in out if os.path.isdir(p)]


def _direct_url(info: str) -> tuple[str | None, bool]:
    try:
        with open(os.path.join(info, "direct_url.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None, False
    url = data.get("url") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url.startswith("file://"):
        return None, False
    dir_info = data.get("dir_info")
    editable = isinstance(dir_info, dict) and bool(dir_info.get("editable"))
    return unquote(urlparse(url).path), editable


def _top_level(info: str) -> list[str]:
    """Import names of a distribution: top_level.txt, else the first parts of RECORD's paths."""
    names: set[str] = set()
    try:
        with open(os.path.join(info, "top_level.txt"), encoding="utf-8") as fh:
            names.update(ln.strip() for ln in fh if ln.strip())
    except OSError:
        pass
    if not names:
        try:
            with open(os.path.join(info, "RECORD"), encoding="utf-8") as fh:
                for line in fh:
                    first = line.split(",", 1)[0].split("/", 1)[0]
                    if first.endswith(".py"):
                        first = first[:-3]
                    if (
                        first
                        and not first.endswith((".dist-info", ".pth", ".data"))
                        and not first.startswith(("__editable__", "_"))
                        and first != ".."
                    ):
                        names.add(first)
        except OSError:
            pass
    return sorted(n for n in names if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", n))


def _editable_target(site: str, name: str, source: str) -> str | None:
    """Where an editable install points ``name``: the path its finder or .pth names."""
    for entry in os.listdir(site):
        if not entry.startswith("__editable__"):
            continue
        try:
            with open(os.path.join(site, entry), encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue
        mapping = re.search(rf"['\"]{re.escape(name)}['\"]\s*:\s*['\"]([^'\"]+)['\"]", text)
        if mapping:
            return mapping.group(1)
        for line in text.splitlines():
            path = line.strip()
            if path.startswith("/") and os.path.isdir(os.path.join(path, name)):
                return os.path.join(path, name)
    return os.path.join(source, name)


# --- the summary -------------------------------------------------------------------------------


def summary_lines(names: Iterable[str], record_path: Callable[[str], str]) -> dict[str, str]:
    """FIXED (every file a fixer changed, with the fixer) and EXCUSED (each gate the baseline
    excused, with its reason; ``names``: the gates in order) for a successful verification's
    summary; only what applies."""
    fixed: list[str] = []
    excused: list[str] = []
    for name in names:
        try:
            with open(record_path(name), encoding="utf-8") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            continue
        undone: dict[str, int] = record.get("fix_dropped") or {}
        if record.get("fixed") or undone:
            note = (
                f"; its edits off the patch's lines undone in {', '.join(sorted(undone))}"
                if undone
                else ""
            )
            fixed.append(f"{', '.join(record.get('fixed') or []) or '(none)'} ({name}{note})")
        if record.get("verdict") == EXCUSED:
            excused.append(str(record.get("reason") or name))
    out = {}
    if fixed:
        out["FIXED"] = "; ".join(fixed)
    if excused:
        out["EXCUSED"] = "; ".join(excused)
    return out
