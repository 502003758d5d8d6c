"""Fixtures: real git repositories in temp folders and patchgate run as users run it (doit)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cpuprofile
import pytest
import yaml
from doitcmd import DODO as DODO  # re-exported: the tests import it from here
from doitcmd import ROOT as ROOT
from doitcmd import doit_argv

CALC = {
    "calc/__init__.py": '"""calc."""\n',
    "calc/ops.py": (
        '"""Arithmetic."""\n\n\ndef add(a: int, b: int) -> int:\n    return a + b\n\n\n'
        "def sub(a: int, b: int) -> int:\n    return a - b\n"
    ),
    "tests/test_ops.py": (
        "from calc.ops import add, sub\n\n\ndef test_add() -> None:\n    assert add(2, 3) == 5\n"
        "\n\ndef test_sub() -> None:\n    assert sub(3, 2) == 1\n"
    ),
    "pyproject.toml": (
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n\n'
        "[tool.mypy]\nstrict = true\n"
    ),
    "README.txt": "calc\n",
    ".gitignore": "__pycache__/\n",
}


def git(repo: Path | str, *args: str) -> str:
    done = subprocess.run(
        ("git", "-C", str(repo), *args), capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str], message: str = "first") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for key, value in (
        ("user.name", "Live Maintainer"),
        ("user.email", "m@live.invalid"),
        ("gc.auto", "0"),
    ):
        git(path, "config", key, value)
    write_files(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return path


def parsed_trailers(message: str) -> dict[str, str]:
    """A commit message's trailers as the real `git interpret-trailers --parse` reads them."""
    out = subprocess.run(
        ("git", "interpret-trailers", "--parse"),
        input=message,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(": ", 1) for line in out.splitlines())


def trailers_of(repo: Path) -> dict[str, str]:
    return parsed_trailers(git(repo, "log", "-1", "--format=%B"))


def write_files(path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def tree_state(repo: Path) -> tuple[str, str, dict[str, str]]:
    """HEAD, status and a hash of every file outside .git: equal means byte-identical."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(repo))
            data = os.readlink(full).encode() if full.is_symlink() else full.read_bytes()
            files[rel] = hashlib.sha256(data).hexdigest()
    status = subprocess.run(
        ("git", "-C", str(repo), "status", "--porcelain"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return git(repo, "rev-parse", "HEAD"), status, files


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a patchgate run in a test: bytecode cached, as on a user's machine.

    Some shells set PYTHONDONTWRITEBYTECODE; then every doit run compiles ~200 modules again,
    which costs more than most steps under test.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
    env.update(extra or {})
    return env


PYCACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "patchgate-test-pycache"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """With PATCHGATE_TEST_CPU=FILE, each test's CPU seconds are appended to FILE
    (tests/cpuprofile.py: how to read them)."""
    log = os.environ.get("PATCHGATE_TEST_CPU")
    meter = cpuprofile.Meter(log) if log else None
    yield
    if meter is not None:
        meter.stop(item.nodeid)


@dataclass
class Result:
    code: int
    out: str

    @property
    def summary(self) -> dict[str, str]:
        """The last summary block's KEY: value lines."""
        fields: dict[str, str] = {}
        for line in self.out.splitlines():
            if line.startswith("RESULT: "):
                fields = {}
            key, sep, value = line.partition(": ")
            if sep and key.isupper() and key.replace("_", "").isalpha():
                fields[key] = value
        return fields


@dataclass
class Project:
    path: Path
    live: Path

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Result:
        done = subprocess.run(
            doit_argv(self.path, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=run_env(env),
            check=False,
        )
        return Result(done.returncode, done.stdout + done.stderr)

    def patch(self, name: str, text: str) -> str:
        target = self.path / "patches" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return f"patches/{name}"

    def configure(self, **values: Any) -> None:
        current = self.config()
        current.update(values)
        (self.path / "patchgate.yaml").write_text(yaml.safe_dump(current))

    def config(self) -> dict[str, Any]:
        path = self.path / "patchgate.yaml"
        return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}

    def ws(self, issue: str) -> Path:
        return self.path / "patches" / "workspaces" / f"issue_{issue}"

    def state(self) -> tuple[str, str, dict[str, str]]:
        return tree_state(self.live)


@pytest.fixture(scope="session")
def calc_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("template") / "live", CALC)


ProjectFactory = Callable[..., Project]


@pytest.fixture
def make_project(tmp_path: Path, calc_template: Path) -> ProjectFactory:
    """A project folder with patches/ and patchgate.yaml, its live repository a copy of calc.

    Gates are off unless a test asks for them: most tests are about other steps.
    """

    def factory(gates: list[dict[str, Any]] | None = None, **config: Any) -> Project:
        path = tmp_path / "project"
        live = path / "live"
        shutil.copytree(calc_template, live, symlinks=True)
        (path / "patches").mkdir()
        project = Project(path, live)
        project.configure(live_repo="live", gates=gates or [], **config)
        return project

    return factory


@pytest.fixture
def project(make_project: ProjectFactory) -> Project:
    return make_project()


def script(files: list[str], body: str) -> str:
    """A patch script declaring FILES and running ``body`` in the workspace."""
    return f"from pathlib import Path\n\nFILES = {files!r}\n\n{body}\n"


ADD_MUL = script(
    ["calc/ops.py"],
    'p = Path("calc/ops.py")\n'
    'p.write_text(p.read_text() + "\\n\\ndef mul(a: int, b: int) -> int:\\n    return a * b\\n")',
)
