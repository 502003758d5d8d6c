"""Helpers the benchmarks share: big generated live repositories, patchgate projects, timing.

    from bench.common import make_project, median_time

* ``make_live_repo(path, n_files)``: a git repository of ``n_files`` files: ``n_files // 20``
  packages of small typed .py modules, a tests/ folder, README.txt and pyproject.toml.
* ``make_project(n_files, base=...)``: a patchgate project folder (patches/, patchgate.yaml)
  whose live repository is such a repository; ``Bench.run("verify", "patch=...")`` runs doit.
* ``scratch_dir(fs)``: a fresh folder on "disk" (/tmp, which is on / here) or "shm" (/dev/shm,
  tmpfs: file creation ~40x cheaper, measured on this kind of machine).
* ``cache_bytecode(folder)``: compiled bytecode for every Python started, kept in ``folder``.
* ``median_time(fn, k)`` / ``time_command(argv, k)``: the median of ``k`` timed runs, with an
  optional untimed ``before`` hook (undo what the previous run did); ``side_by_side`` times
  several things interleaved, so their ratio survives a machine whose load drifts.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.doitcmd import doit_argv

ROOT = Path(__file__).resolve().parent.parent
FILESYSTEMS = {"disk": "/tmp", "shm": "/dev/shm"}
FILES_PER_PACKAGE = 20
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@live.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@live.invalid",
}


def scratch_dir(fs: str = "disk", prefix: str = "pgbench-") -> Path:
    """A new empty folder on the named filesystem ("disk" or "shm") or under a given path."""
    base = FILESYSTEMS.get(fs, fs)
    os.makedirs(base, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def cache_bytecode(folder: Path) -> bool:
    """Let every Python this process starts keep compiled bytecode in ``folder``.

    Here the environment sets PYTHONDONTWRITEBYTECODE=1 and the venv ships no __pycache__
    (uv does not compile by default): every doit run would compile ~200 modules (~0.3 s) that
    an ordinary install loads precompiled. True if caching had been off.
    """
    was_off = bool(os.environ.pop("PYTHONDONTWRITEBYTECODE", None))
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    return was_off


def git(repo: Path | str, *args: str, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        ("git", "-C", str(repo), *args),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV, **(env or {})},
    )
    return done.stdout.strip()


def module_text(pkg: int, mod: int) -> str:
    """A small typed module that ruff, mypy and pytest accept."""
    return (
        f'"""Package {pkg}, module {mod}."""\n\n\n'
        f"def value_{mod}(x: int) -> int:\n"
        f"    return x + {pkg * FILES_PER_PACKAGE + mod}\n"
    )


def repo_files(n_files: int) -> dict[str, str]:
    """``n_files`` paths and contents: packages of modules, tests, README.txt, pyproject.toml."""
    files = {
        "README.txt": "generated live repository\n",
        "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n',
        ".gitignore": "__pycache__/\n",
        "tests/test_values.py": (
            "from pkg0000.m01 import value_1\n\n\n"
            "def test_value() -> None:\n    assert value_1(0) == 1\n"
        ),
    }
    pkg = 0
    while len(files) < n_files:
        files[f"pkg{pkg:04d}/__init__.py"] = f'"""Package {pkg}."""\n'
        for mod in range(1, FILES_PER_PACKAGE):
            if len(files) >= n_files:
                break
            files[f"pkg{pkg:04d}/m{mod:02d}.py"] = module_text(pkg, mod)
        pkg += 1
    return files


def make_live_repo(path: Path, n_files: int) -> Path:
    """A committed git repository of ``n_files`` files at ``path`` (gc.auto off)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "gc.auto", "0")
    for name, text in repo_files(n_files).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", f"{n_files} files")
    return path


@dataclass
class Bench:
    """A patchgate project folder: ``live/`` plus ``patches/`` and ``patchgate.yaml``."""

    path: Path
    n_files: int

    @property
    def live(self) -> Path:
        return self.path / "live"

    def configure(self, **values: Any) -> None:
        config = self.path / "patchgate.yaml"
        current: dict[str, Any] = {}
        if config.exists():
            current = yaml.safe_load(config.read_text()) or {}
        current.update(values)
        config.write_text(yaml.safe_dump(current))

    def patch(self, name: str, text: str) -> str:
        target = self.path / "patches" / name
        target.write_text(text)
        return f"patches/{name}"

    def argv(self, *args: str) -> list[str]:
        return doit_argv(self.path, *args)

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(self.argv(*args), capture_output=True, text=True, check=False)
        out = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise RuntimeError(f"doit {' '.join(args)} failed ({done.returncode}):\n{out}")
        return out

    def forget(self) -> None:
        """Remove every workspace and all doit state: the next verify starts from nothing.

        The parsed configuration (patches/.state/config-cache.json) stays, as it does for a
        user verifying a new patch in a configured project.
        """
        state = self.path / "patches" / ".state"
        shutil.rmtree(self.path / "patches" / "workspaces", ignore_errors=True)
        if state.is_dir():
            for entry in state.iterdir():
                if entry.name != "config-cache.json":
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
        git(self.live, "worktree", "prune")

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def make_project(n_files: int, base: Path | None = None, **config: Any) -> Bench:
    """A project whose live repository holds ``n_files`` files; config goes to patchgate.yaml."""
    path = (base or scratch_dir()) / f"project-{n_files}"
    make_live_repo(path / "live", n_files)
    (path / "patches").mkdir()
    bench = Bench(path, n_files)
    bench.configure(live_repo="live", **config)
    return bench


def edit_script(path: str, text: str) -> str:
    """A patch script that writes ``text`` to the repo-relative ``path``."""
    return (
        f"from pathlib import Path\n\nFILES = [{path!r}]\n\nPath({path!r}).write_text({text!r})\n"
    )


SUMMARY_ENV = "PATCHGATE_BENCH_SUMMARY"


def summary(measure: str, value: str, reference: str = "", ratio: str = "", aim: str = "") -> None:
    """One row of run_all's closing table (a JSON line in $PATCHGATE_BENCH_SUMMARY, if set)."""
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return
    row = {"measure": measure, "value": value, "reference": reference, "ratio": ratio, "aim": aim}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Rows as aligned columns (the first row is ``header``)."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    )


def median_time(
    fn: Callable[[], object], k: int = 5, before: Callable[[], object] | None = None
) -> float:
    """Median wall time of ``k`` calls of ``fn`` in seconds; ``before`` runs untimed first."""
    times = []
    for _ in range(k):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Timed:
    """Something to time: ``fn``, with an untimed ``before`` (e.g. edit the patch, reset)."""

    fn: Callable[[], object]
    before: Callable[[], object] | None = None


def side_by_side(things: Sequence[Timed], k: int = 5) -> list[float]:
    """Median wall time of each of ``things``, run interleaved (a, b, a, b, ...).

    On a shared machine the load drifts: interleaving exposes every contender to the same
    drift, so their ratio holds even when the absolute figures move.
    """
    times: list[list[float]] = [[] for _ in things]
    for _ in range(k):
        for thing, bucket in zip(things, times, strict=True):
            if thing.before is not None:
                thing.before()
            start = time.perf_counter()
            thing.fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def command(argv: Sequence[str], cwd: Path | str | None = None) -> Callable[[], None]:
    """A callable running ``argv`` with output discarded; a failure raises."""

    def run() -> None:
        subprocess.run(
            list(argv), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )

    return run


def time_command(
    argv: Sequence[str],
    k: int = 5,
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    before: Callable[[], object] | None = None,
    check: bool = True,
) -> float:
    """Median wall time of running ``argv`` ``k`` times (output discarded)."""

    def once() -> None:
        subprocess.run(
            list(argv),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=check,
        )

    return median_time(once, k, before)
