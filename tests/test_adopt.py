"""Adopting patchgate on another repository (issue 11): install, init, detected gates."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, Project, git, make_repo, run_env, tree_state, write_files
from patchgate import config, detect, gates, init

VENV_BIN = Path(sys.executable).parent

GREET = {
    "greet/__init__.py": '"""Greetings."""\n\n\ndef hello(name: str) -> str:\n'
    '    return f"hello {name}"\n',
    "tests/test_greet.py": "from greet import hello\n\n\ndef test_hello() -> None:\n"
    '    assert hello("ann") == "hello ann"\n',
    "pyproject.toml": (
        '[tool.ruff]\nline-length = 100\n\n[tool.pytest.ini_options]\npythonpath = ["."]\n'
    ),
    ".gitignore": "__pycache__/\n",
}


def names(live: Path, tool_bin: str | None = None) -> dict[str, str]:
    return {d.gate["name"]: d.reason for d in detect.detect_gates(str(live), tool_bin)}


# --- detection: pure logic on real files ---------------------------------------------------


def test_black_project_gets_black_as_fixer_and_no_ruff_format(tmp_path: Path) -> None:
    write_files(tmp_path, {"pyproject.toml": "[tool.black]\nline-length = 88\n", "a.py": ""})
    found = detect.detect_gates(str(tmp_path), None)
    assert [d.gate["name"] for d in found] == ["black"]
    assert found[0].gate["fixes"] is True and found[0].gate["command"][0] == "black"
    assert found[0].reason == "pyproject.toml has [tool.black]"


def test_ruff_section_alone_is_lint_not_format(tmp_path: Path) -> None:
    write_files(tmp_path, {"pyproject.toml": "[tool.ruff]\nline-length = 100\n"})
    assert list(names(tmp_path)) == ["ruff"]
    write_files(tmp_path, {"pyproject.toml": "[tool.ruff]\n[tool.ruff.format]\n"})
    assert list(names(tmp_path)) == ["ruff-format", "ruff"]


def test_every_configuration_file_is_read(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            ".flake8": "[flake8]\nmax-line-length = 88\n",
            "mypy.ini": "[mypy]\nstrict = True\n",
            ".ruff.toml": "line-length = 90\n[format]\nquote-style = 'single'\n",
            "test_thing.py": "def test_x() -> None:\n    pass\n",
        },
    )
    found = names(tmp_path)
    assert list(found) == ["ruff-format", "ruff", "flake8", "mypy", "pytest"]
    assert found["flake8"] == ".flake8 exists" and found["mypy"] == "mypy.ini exists"
    assert found["pytest"] == "the repository has tests (test_thing.py)"


def test_setup_cfg_tox_and_pre_commit(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "setup.cfg": "[flake8]\nignore = W503\n[mypy]\n[tool:pytest]\ntestpaths = tests\n",
            "tox.ini": "[testenv:fmt]\ncommands = black --check .\n",
            ".pre-commit-config.yaml": "repos:\n- repo: https://github.com/astral-sh/ruff-pre-commit\n"
            "  hooks:\n  - id: ruff\n  - id: ruff-format\n",
        },
    )
    found = names(tmp_path)
    assert list(found) == ["black", "ruff-format", "ruff", "flake8", "mypy", "pytest"]
    assert found["black"] == "tox.ini [testenv:fmt] runs black"
    assert found["ruff-format"] == ".pre-commit-config.yaml has the ruff-format hook"
    assert found["mypy"] == "setup.cfg has [mypy]"


def test_mypy_found_in_tox_runs_with_toxs_options_on_toxs_paths(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "tox.ini": "[testenv:mypy]\ncommands = mypy {posargs:--strict src}\n",
            "src/pkg/a.py": "",
            "tests/test_a.py": "",
        },
    )
    mypy, pytest_gate = (d.gate for d in detect.detect_gates(str(tmp_path), None))
    assert mypy["command"][-2:] == ["--strict", "{files}"]
    assert mypy["files"] == ["src/*.py", "src/*.pyi"]
    changes = [{"path": p, "status": "M"} for p in ("src/pkg/a.py", "tests/test_a.py")]
    assert gates.matching(config.Gate.from_json(mypy, 600), changes) == ["src/pkg/a.py"]
    # the judged worktree is read-only: coverage data goes to the gate's own folder
    assert pytest_gate["env"] == {"COVERAGE_FILE": "{cache}/.coverage"}


def test_a_dev_requirements_file_names_the_tools(tmp_path: Path) -> None:
    write_files(tmp_path, {"requirements-dev.txt": "# tools\nblack==23.1.0\nFlake8>=6\npytest\n"})
    found = names(tmp_path)
    assert list(found) == ["black", "flake8"]
    assert found["black"] == "requirements-dev.txt lists black"


def test_nothing_configured_means_no_formatter_and_no_linter(tmp_path: Path) -> None:
    write_files(tmp_path, {"pkg/mod.py": "x = 1\n", "README": "r\n"})
    assert names(tmp_path) == {}


def test_mypy_installed_in_tool_env_counts_and_a_missing_tool_is_noted(tmp_path: Path) -> None:
    live, env = tmp_path / "live", tmp_path / "env" / "bin"
    write_files(live, {"pyproject.toml": "[tool.black]\n", "tests/test_a.py": ""})
    env.mkdir(parents=True)
    (env / "mypy").write_text("")
    found = names(live, str(env))
    assert found["mypy"] == "mypy is installed in tool_env"
    assert found["black"].endswith("(note: black is not installed in tool_env)")
    # patchgate's own environment says nothing about the project: no tool_env, no mypy
    assert "mypy" not in names(live, None)


def test_detection_follows_a_changed_configuration(tmp_path: Path) -> None:
    write_files(tmp_path, {"pyproject.toml": "[tool.black]\n"})
    assert list(names(tmp_path)) == ["black"]
    (tmp_path / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    assert list(names(tmp_path)) == ["ruff"]


def test_detection_is_remembered_on_disk_until_a_configuration_file_changes(
    tmp_path: Path,
) -> None:
    live, cache = tmp_path / "live", tmp_path / "state" / "detected.json"
    write_files(live, {"pyproject.toml": "[tool.black]\n"})
    assert [d.gate["name"] for d in detect.cached(str(live), None, str(cache))] == ["black"]
    data = json.loads(cache.read_text())
    data["gates"][0]["reason"] = "read back from the cache"
    cache.write_text(json.dumps(data))
    assert detect.cached(str(live), None, str(cache))[0].reason == "read back from the cache"
    (live / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    assert [d.gate["name"] for d in detect.cached(str(live), None, str(cache))] == ["ruff"]


def test_effective_gates_detect_only_without_a_gates_key(tmp_path: Path) -> None:
    write_files(tmp_path / "live", {"pyproject.toml": "[tool.black]\n"})
    (tmp_path / "patchgate.yaml").write_text("live_repo: live\n")
    assert [g.name for g in config.effective_gates(config.load(str(tmp_path), {}))] == ["black"]
    (tmp_path / "patchgate.yaml").write_text("live_repo: live\ngates: []\n")
    assert config.effective_gates(config.load(str(tmp_path), {})) == []


def test_doit_config_shows_the_detected_gates_and_why(tmp_path: Path) -> None:
    make_repo(tmp_path / "live", GREET)
    (tmp_path / "patchgate.yaml").write_text("live_repo: live\n")
    res = Project(tmp_path, tmp_path / "live").run("config")
    assert res.code == 0, res.out
    assert re.search(r'^gates +\["ruff", "pytest"\]  \(detected, see below\)$', res.out, re.M)
    assert "#   ruff         pyproject.toml has [tool.ruff]; runs: ruff check" in res.out
    assert "#   pytest       the repository has tests (tests/)" in res.out


# --- patchgate init ---------------------------------------------------------------------------


def test_init_writes_config_dodo_and_gitignore_and_keeps_what_exists(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {**GREET, ".gitignore": "*.pyc"})
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text("")
    outcomes = init.init(str(repo))
    assert [(o.path, o.action) for o in outcomes] == [
        ("patchgate.yaml", "wrote"),
        ("dodo.py", "wrote"),
        (".gitignore", "updated"),
    ]
    text = (repo / "patchgate.yaml").read_text()
    assert "live_repo: .\n" in text and "tool_env: .venv\n" in text
    assert (
        "  # pyproject.toml has [tool.ruff] (note: ruff is not installed in tool_env)\n"
        "  - name: ruff\n"
    ) in text
    assert config.parse(text.encode())["gates"][0]["command"][:2] == ["ruff", "check"]
    assert (repo / "dodo.py").read_text().endswith("from patchgate.dodo import *  # noqa: F403\n")
    ignore = (repo / ".gitignore").read_text()
    assert ignore.startswith("*.pyc\n# patchgate") and "/patches/workspaces/\n" in ignore
    (repo / "patchgate.yaml").write_text("live_repo: .\ngates: []\n")
    again = init.init(str(repo))
    assert [o.action for o in again] == ["kept", "kept", "unchanged"]
    assert "left as it is" in again[0].detail
    assert "`patchgate verify patch=X`" in again[1].detail
    assert (repo / "patchgate.yaml").read_text() == "live_repo: .\ngates: []\n"


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("plain", "is not a git repository; run patchgate init in your repository"),
        ("repo/sub", "is inside the repository"),
    ],
)
def test_init_refuses_outside_a_repository_top(tmp_path: Path, where: str, reason: str) -> None:
    make_repo(tmp_path / "repo", {"sub/a.txt": "a\n"})
    (tmp_path / "plain").mkdir()
    before = tree_state(tmp_path / "repo")
    done = subprocess.run(
        [sys.executable, "-m", "patchgate", "init"],
        cwd=tmp_path / where,
        capture_output=True,
        text=True,
        env=run_env(),
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "STAGE: INIT" in done.stdout and reason in done.stdout
    assert tree_state(tmp_path / "repo") == before
    assert not (tmp_path / where / "patchgate.yaml").exists()


# --- the documented commands, exactly ---------------------------------------------------------


def documented_commands() -> str:
    text = (ROOT / "docs" / "adopting.md").read_text()
    block = text.split("<!-- adopting:begin -->", 1)[1].split("<!-- adopting:end -->", 1)[0]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


def test_the_documented_commands_work_on_a_fresh_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "my-repo", GREET)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    env = run_env({"PATH": f"{VENV_BIN}:{os.environ['PATH']}"})
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", documented_commands()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "init: gate ruff: pyproject.toml has [tool.ruff]\n" in out
    # init wrote the detected gates into patchgate.yaml: doit config shows them from there
    assert re.search(r'^gates .*"name": "ruff".*"name": "pytest".*\(patchgate.yaml\)$', out, re.M)
    assert out.count("RESULT: SUCCESS") >= 4 and "PUSH: OK" in out, out
    assert git(remote, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")
    landed = git(repo, "show", "HEAD:greet/__init__.py")
    assert landed.endswith('def bye(name: str) -> str:\n    return f"bye {name}"')
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


# --- a regular install ------------------------------------------------------------------------


def test_a_regular_install_carries_its_data_and_no_top_level_tasks(tmp_path: Path) -> None:
    """pip install (not editable) of this checkout into a fresh venv: schemas and demo files
    inside the package, `import tasks` fails, `patchgate init` and `patchgate config` work."""
    source = tmp_path / "src"
    for name in ("tasks", "schemas", "demo"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # patchgate's dependencies come from this checkout's venv (a path in a .pth is not a site
    # dir: the editable install of this checkout stays invisible there).
    here = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "deps.pth").write_text(here + "\n")
    python = str(venv / "bin" / "python")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    subprocess.run([*install, "--no-build-isolation", str(source)], check=True, env=run_env())
    probe = textwrap.dedent(
        """
        import importlib.util, os, patchgate, patchgate.schema, patchgate.demo as d
        print(importlib.util.find_spec("tasks"))
        print(patchgate.schema.SCHEMA_DIR)
        print(sorted(os.listdir(patchgate.schema.SCHEMA_DIR))[0])
        print(sorted(os.listdir(os.path.join(d.DEMO_SOURCE, "live", "calc"))))
        """
    )
    done = subprocess.run(
        [python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    spec, schemas, first, calc = done.stdout.splitlines()
    assert spec == "None"
    assert schemas == str(site / "patchgate" / "schemas")
    assert first == "audit-report.schema.json"
    assert calc == "['__init__.py', 'ops.py']"
    repo = make_repo(tmp_path / "repo", GREET)
    for args in (["init"], ["config"]):
        done = subprocess.run(
            [str(venv / "bin" / "patchgate"), *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "# project: " + str(repo) in done.stdout
