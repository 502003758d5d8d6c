"""Gates: real ruff, mypy and pytest on fixture repositories, as `doit verify` runs them.

Fixture repositories are the calc template of conftest plus what a patch adds to it (a lint
error, a type error, a broken test) or what is committed on live first (a failure that is
already on the base). Scenarios that need the default gates share one project (one issue per
patch); tests that change configuration get their own.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ADD_MUL, CALC, Project, ProjectFactory, Result, git, script
from patchgate.config import DEFAULT_GATES
from patchgate.gates import findings, first_error, node_id

OPS = CALC["calc/ops.py"]
MUL = "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"


def ops_patch(text: str, extra: dict[str, str] | None = None) -> str:
    """A patch script that writes calc/ops.py (and ``extra`` files) with the given content."""
    files = {"calc/ops.py": text, **(extra or {})}
    body = "\n".join(f"Path({k!r}).write_text({v!r})" for k, v in files.items())
    return script(sorted(files), body)


LINT = ops_patch(OPS.replace('"""Arithmetic."""\n', '"""Arithmetic."""\n\nimport os\n') + MUL)
TYPE_OPS = OPS + MUL.replace("return a * b", "return str(a * b)")
TYPE = ops_patch(TYPE_OPS)
BREAK_ADD = ops_patch(OPS.replace("return a + b", "return a + b + 1"))
ALL_WRONG = ops_patch(
    OPS.replace('"""Arithmetic."""\n', '"""Arithmetic."""\n\nimport os\n').replace(
        "return a + b", "return a + b + 1"
    )
    + MUL.replace("return a * b", "return str(a * b)")
)
UGLY_OPS = OPS + "\n\ndef mul(a:int,b:int)->int:\n    return a*b\n"
UGLY = ops_patch(UGLY_OPS)
FORMATTED_OPS = OPS + MUL
README = script(["README.txt"], 'Path("README.txt").write_text("calc, documented\\n")')
PY_GATES = ("ruff-format", "ruff", "mypy", "pytest")


def gate(name: str, **changes: Any) -> dict[str, Any]:
    """One of the default gates, with ``changes`` applied."""
    found = copy.deepcopy(next(g for g in DEFAULT_GATES if g["name"] == name))
    found.update(changes)
    return found


def result_of(project: Project, issue: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.ws(issue) / "result.json").read_text())
    return data


def record_of(project: Project, issue: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.ws(issue) / "gates" / f"{name}.json").read_text())
    return data


def log_of(project: Project, res: Result) -> str:
    return (project.path / res.summary["LOG"]).read_text()


def executed(res: Result, issue: str, step: str) -> bool:
    """doit printed ``.  verify:ISSUE-STEP`` (ran) rather than ``-- ...`` (up to date)."""
    lines = res.out.splitlines()
    name = f"verify:{issue}-{step}"
    assert f".  {name}" in lines or f"-- {name}" in lines, f"{name} not in output:\n{res.out}"
    return f".  {name}" in lines


def ran(res: Result, issue: str, step: str) -> bool:
    """doit ran the step (not printed at all: never reached, as after a stopping failure)."""
    return f".  verify:{issue}-{step}" in res.out.splitlines()


def commit(repo: Path, files: dict[str, str], message: str = "base change") -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def hash_object(text: str) -> str:
    done = subprocess.run(
        ("git", "hash-object", "--stdin"), input=text, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def failed_cleanly(res: Result, stage: str) -> None:
    assert res.code != 0, res.out
    assert res.summary["RESULT"] == "FAIL", res.out
    assert res.summary["STAGE"] == stage, res.out
    assert "Traceback" not in res.out


# --- a project with the default gates, shared by the scenarios that do not reconfigure it -----


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, calc_template: Path) -> Project:
    path = tmp_path_factory.mktemp("gates") / "project"
    live = path / "live"
    shutil.copytree(calc_template, live, symlinks=True)
    (path / "patches").mkdir()
    project = Project(path, live)
    project.configure(live_repo="live", gates=DEFAULT_GATES)
    return project


Verify = Callable[..., Result]  # (patch name, patch text, *doit arguments)


@pytest.fixture(scope="module")
def verify_once(shared: Project) -> Verify:
    """Run each (name, patch text) once per module: several tests read the same run."""
    runs: dict[tuple[str, str, tuple[str, ...]], Result] = {}

    def verify(name: str, text: str, *args: str) -> Result:
        key = (name, text, args)
        if key not in runs:
            runs[key] = shared.run("verify", f"patch={shared.patch(name, text)}", *args)
        return runs[key]

    return verify


# --- selection ---------------------------------------------------------------------------------


def test_passing_patch_runs_every_python_gate(shared: Project, verify_once: Verify) -> None:
    res = verify_once("good.py", ADD_MUL)
    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS"
    gates = result_of(shared, "good")["gates"]
    assert {n: gates[n]["verdict"] for n in PY_GATES} == dict.fromkeys(PY_GATES, "pass")
    assert gates["ruff"]["checked"] == ["calc/ops.py"]
    assert all(executed(res, "good", f"gate-{n}") for n in PY_GATES)


def test_non_python_patch_runs_no_python_gate(shared: Project, verify_once: Verify) -> None:
    res = verify_once("docs.py", README)
    assert res.code == 0, res.out
    result = result_of(shared, "docs")
    for name in PY_GATES:
        record = record_of(shared, "docs", name)
        assert record["verdict"] == "skipped"
        assert "no changed file matches *.py" in record["reason"]
        assert result["gates"][name]["verdict"] == "skipped"
        assert f"gate {name}: skipped (no changed file matches" in log_of(shared, res)
    assert "/bin/ruff" not in log_of(shared, res) and "/bin/mypy" not in log_of(shared, res)


def test_all_gates_runs_every_gate_even_for_a_non_python_patch(
    shared: Project, verify_once: Verify
) -> None:
    res = verify_once("docs_all.py", README, "all_gates=1")
    assert res.code == 0, res.out
    result = result_of(shared, "docs_all")
    assert {n: result["gates"][n]["verdict"] for n in PY_GATES} == dict.fromkeys(PY_GATES, "pass")
    log = log_of(shared, res)
    assert "/bin/mypy --cache-dir" in log and "2 passed" in log


# --- stop, keep going, allow failures ----------------------------------------------------------


def test_lint_error_stops_at_ruff_with_its_first_message(
    shared: Project, verify_once: Verify
) -> None:
    res = verify_once("lint.py", LINT)
    failed_cleanly(res, "GATES")
    reason = res.summary["REASON"]
    assert reason.startswith("ruff: calc/ops.py:3:8: F401"), reason
    assert "`os` imported but unused" in reason
    gates = result_of(shared, "lint")["gates"]
    assert gates["ruff"]["verdict"] == "fail"
    assert "mypy" not in gates and "pytest" not in gates  # later gates did not run
    assert ran(res, "lint", "gate-ruff")
    assert not ran(res, "lint", "gate-mypy") and not ran(res, "lint", "gate-pytest")
    assert result_of(shared, "lint")["verification_status"] == "fail"


def test_type_error_reason_is_the_first_mypy_error(shared: Project, verify_once: Verify) -> None:
    res = verify_once("typo.py", TYPE)
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == (
        'mypy: calc/ops.py:13: error: Incompatible return value type (got "str", expected "int")'
        "  [return-value]"
    )


def test_failing_test_reason_names_the_test_id(shared: Project, verify_once: Verify) -> None:
    res = verify_once("broken.py", BREAK_ADD)
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == "pytest: tests/test_ops.py::test_add failed: assert 6 == 5"
    record = record_of(shared, "broken", "pytest")
    assert record["exit_code"] == 1 and record["verdict"] == "fail"


def test_keep_going_runs_all_gates_and_reports_every_failure(
    shared: Project, verify_once: Verify
) -> None:
    res = verify_once("wrong.py", ALL_WRONG, "keep_going=1")
    assert res.code != 0 and res.summary["RESULT"] == "FAIL", res.out
    assert res.summary["REASON"].startswith("ruff: calc/ops.py:3:8: F401")  # the first failure
    assert result_of(shared, "wrong")["stage"] == "GATES"
    gates = result_of(shared, "wrong")["gates"]
    verdicts = {n: gates[n]["verdict"] for n in PY_GATES}
    assert verdicts == {"ruff-format": "pass", "ruff": "fail", "mypy": "fail", "pytest": "fail"}
    assert gates["pytest"]["reason"].startswith("pytest: tests/test_ops.py::test_add failed")


def test_keep_going_summary_names_the_gates_stage(shared: Project, verify_once: Verify) -> None:
    res = verify_once("wrong.py", ALL_WRONG, "keep_going=1")
    assert res.summary["STAGE"] == "GATES"


def test_log_holds_the_full_output_of_every_gate(shared: Project, verify_once: Verify) -> None:
    log = log_of(shared, verify_once("wrong.py", ALL_WRONG, "keep_going=1"))
    assert "1 file left unchanged" in log  # ruff format
    assert "F401 [*] `os` imported but unused" in log and "help: Remove unused import" in log
    assert 'calc/ops.py:15: error: Incompatible return value type (got "str"' in log
    assert "def test_add() -> None:" in log and "1 failed, 1 passed" in log  # pytest's traceback
    for name in PY_GATES:
        assert f"[gate {name}: exit " in log


def test_allow_gates_fail_succeeds_with_the_failures_recorded(
    shared: Project, verify_once: Verify
) -> None:
    res = verify_once("wrong_ok.py", ALL_WRONG, "allow_gates_fail=1")
    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS"
    result = result_of(shared, "wrong_ok")
    assert {n: result["gates"][n]["verdict"] for n in ("ruff", "mypy", "pytest")} == dict.fromkeys(
        ("ruff", "mypy", "pytest"), "fail"
    )
    assert "gates failed but allow_gates_fail=1: ruff, mypy, pytest" in log_of(shared, res)


def test_verdicts_of_an_earlier_attempt_do_not_outlive_a_stop(make_project: ProjectFactory) -> None:
    project = make_project(gates=[gate("ruff"), gate("pytest")])
    patch = project.patch("again.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    assert record_of(project, "again", "pytest")["verdict"] == "pass"
    project.patch("again.py", LINT)
    res = project.run("verify", f"patch={patch}")
    failed_cleanly(res, "GATES")
    assert "pytest" not in result_of(project, "again")["gates"]
    assert not (project.ws("again") / "gates" / "pytest.json").exists()


# --- a fixing gate -----------------------------------------------------------------------------


def test_ruff_format_fix_counts_as_the_patchs_own(shared: Project, verify_once: Verify) -> None:
    res = verify_once("ugly.py", UGLY)
    assert res.code == 0, res.out
    assert (shared.ws("ugly") / "repo" / "calc" / "ops.py").read_text() == FORMATTED_OPS
    assert record_of(shared, "ugly", "ruff-format")["fixed"] == ["calc/ops.py"]
    result = result_of(shared, "ugly")
    (change,) = result["changes"]
    assert change["path"] == "calc/ops.py" and change["blob"] == hash_object(FORMATTED_OPS)
    assert (
        git(shared.ws("ugly") / "repo", "rev-parse", f"{result['tree']}:calc/ops.py")
        == (change["blob"])
    )
    with zipfile.ZipFile(shared.ws("ugly") / "patched.zip") as zf:
        assert zf.read("files/calc/ops.py").decode() == FORMATTED_OPS


# --- timeouts, environment, Atlas commands -----------------------------------------------------


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def test_a_hanging_gate_times_out_and_its_processes_are_killed(
    make_project: ProjectFactory,
) -> None:
    marker = f"hang-{uuid.uuid4().hex}"
    sleeper = (
        f"import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)  # {marker}"
    )
    project = make_project(
        gates=[{"name": "hang", "command": ["python", "-c", sleeper], "timeout": 1}]
    )
    start = time.monotonic()
    res = project.run("verify", f"patch={project.patch('hang.py', README)}")
    elapsed = time.monotonic() - start
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"].startswith("hang timed out after 1s and was killed")
    assert elapsed < 15, elapsed
    assert record_of(project, "hang", "hang")["timed_out"] is True
    assert _processes_with(marker) == []


def test_gate_environment_is_pinned(make_project: ProjectFactory) -> None:
    check = (
        "import os, sys; want = {'TZ': 'UTC', 'LANG': 'C.UTF-8', 'PYTHONHASHSEED': '0'}; "
        "got = {k: os.environ.get(k) for k in want}; print(got); sys.exit(got != want)"
    )
    project = make_project(gates=[{"name": "env", "command": ["python", "-c", check]}])
    res = project.run(
        "verify",
        f"patch={project.patch('env.py', README)}",
        env={"TZ": "Asia/Tokyo", "LANG": "de_DE.UTF-8", "PYTHONHASHSEED": "123"},
    )
    assert res.code == 0, res.out
    assert record_of(project, "env", "env")["verdict"] == "pass"


def test_atlas_build_and_test_commands_become_gates(make_project: ProjectFactory) -> None:
    project = make_project(
        build_command="python -c \"print('built')\"",
        test_commands=[
            "python -m pytest -q -p no:cacheprovider",
            ["python", "-c", "import sys; sys.exit(3)"],
        ],
        keep_going=True,
    )
    res = project.run("verify", f"patch={project.patch('atlas.py', ADD_MUL)}")
    assert res.code != 0 and res.summary["RESULT"] == "FAIL", res.out
    assert res.summary["REASON"] == "test-2: exit 3, no output"
    assert all(executed(res, "atlas", f"gate-{n}") for n in ("build", "test-1", "test-2"))
    result = result_of(project, "atlas")
    assert result["build_status"] == "pass"
    assert [(t["command"], t["exit_code"]) for t in result["test_results"]] == [
        ("python -m pytest -q -p no:cacheprovider", 0),
        ("python -c import sys; sys.exit(3)", 3),
    ]
    assert all(t["duration_seconds"] > 0 for t in result["test_results"])


def test_a_failing_build_command_sets_build_status(make_project: ProjectFactory) -> None:
    project = make_project(build_command=["python", "-c", "raise SystemExit('no compiler')"])
    res = project.run("verify", f"patch={project.patch('nobuild.py', README)}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == "build: exit 1: no compiler"
    assert result_of(project, "nobuild")["build_status"] == "fail"


def test_tool_env_points_gates_at_another_virtual_environment(
    make_project: ProjectFactory,
) -> None:
    which = ["python", "-c", "import sys; print('prefix=' + sys.prefix)"]
    project = make_project(gates=[{"name": "which", "command": which}])
    venv = project.path / "toolenv"
    subprocess.run((sys.executable, "-m", "venv", "--without-pip", str(venv)), check=True)
    project.configure(tool_env="toolenv")
    res = project.run("verify", f"patch={project.patch('tool.py', README)}")
    assert res.code == 0, res.out
    assert f"prefix={venv}" in log_of(project, res)
    assert record_of(project, "tool", "which")["command"][0] == str(venv / "bin" / "python")


# --- baseline: judge only what the patch changed -----------------------------------------------

BROKEN_TEST = "def test_broken() -> None:\n    assert 1 == 2\n"


def test_baseline_excuses_a_test_already_failing_on_the_base(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("pytest")])
    commit(project.live, {"tests/test_broken.py": BROKEN_TEST})
    patch = project.patch("mul.py", ADD_MUL)
    res = project.run("verify", f"patch={patch}")
    failed_cleanly(res, "GATES")
    assert "tests/test_broken.py::test_broken failed" in res.summary["REASON"]
    res = project.run("verify", f"patch={patch}", "baseline=1")
    assert res.code == 0, res.out
    record = record_of(project, "mul", "pytest")
    assert record["verdict"] == "excused" and record["exit_code"] == 1
    assert record["reason"] == (
        "pytest: 1 test(s) already failing on the base "
        "(tests/test_broken.py::test_broken failed: assert 1 == 2)"
    )
    assert record["baseline"]["tests"]["fail->fail"] == ["tests/test_broken.py::test_broken"]


def test_baseline_classifies_every_test(make_project: ProjectFactory) -> None:
    project = make_project(gates=[gate("pytest")], baseline=True)
    has_mul = (
        "from calc import ops\n\n\ndef test_has_mul() -> None:\n    assert hasattr(ops, 'mul')\n"
    )
    commit(project.live, {"tests/test_more.py": has_mul + "\n\n" + BROKEN_TEST})
    patch = ops_patch(OPS.replace("return a - b", "return a - b - 1") + MUL)
    res = project.run("verify", f"patch={project.patch('mixed.py', patch)}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == (
        "pytest: tests/test_ops.py::test_sub failed: assert 0 == 1 (passed on the base)"
    )
    assert record_of(project, "mixed", "pytest")["baseline"]["tests"] == {
        "fail->pass": ["tests/test_more.py::test_has_mul"],
        "pass->pass": ["tests/test_ops.py::test_add"],
        "pass->fail": ["tests/test_ops.py::test_sub"],
        "fail->fail": ["tests/test_more.py::test_broken"],
    }


def test_baseline_excuses_an_old_lint_finding_but_not_a_new_one(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("ruff")], baseline=True)
    with_os = OPS.replace('"""Arithmetic."""\n', '"""Arithmetic."""\n\nimport os\n')
    commit(project.live, {"calc/ops.py": with_os})
    res = project.run("verify", f"patch={project.patch('old.py', ops_patch(with_os + MUL))}")
    assert res.code == 0, res.out
    assert "failure pre-existing on the base" in record_of(project, "old", "ruff")["reason"]
    with_sys = with_os.replace("import os\n", "import os\nimport sys\n")
    res = project.run("verify", f"patch={project.patch('new.py', ops_patch(with_sys + MUL))}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == (
        "ruff: calc/ops.py:4:8: F401 [*] `sys` imported but unused (new; not on the base)"
    )


def test_baseline_excuses_an_old_type_error(make_project: ProjectFactory) -> None:
    project = make_project(gates=[gate("mypy")], baseline=True)
    bad = OPS + '\n\ndef name() -> int:\n    return "calc"\n'
    commit(project.live, {"calc/ops.py": bad})
    res = project.run("verify", f"patch={project.patch('typed.py', ops_patch(bad + MUL))}")
    assert res.code == 0, res.out
    record = record_of(project, "typed", "mypy")
    assert record["verdict"] == "excused" and record["exit_code"] == 1
    assert record["baseline"]["findings"] == [
        'calc/ops.py: error: Incompatible return value type (got "str", expected "int")  '
        "[return-value]"
    ]


def test_baseline_run_is_cached_for_every_patch_on_the_same_base(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("pytest")], baseline=True)
    commit(project.live, {"tests/test_broken.py": BROKEN_TEST})
    first = project.run("verify", f"patch={project.patch('one.py', ADD_MUL)}")
    assert first.code == 0, first.out
    assert "baseline pytest: running on base" in log_of(project, first)
    other = script(["calc/extra.py"], 'Path("calc/extra.py").write_text("X = 1\\n")')
    second = project.run("verify", f"patch={project.patch('two.py', other)}")
    assert second.code == 0, second.out
    assert "baseline pytest: running on base" not in log_of(project, second)
    assert "baseline pytest: cached" in log_of(project, second)
    assert len(list((project.path / "patches" / ".state" / "baseline").iterdir())) == 1


# --- incremental: each gate is its own step ----------------------------------------------------


def test_changing_one_gates_config_reruns_only_that_gate(make_project: ProjectFactory) -> None:
    project = make_project(gates=DEFAULT_GATES)
    patch = project.patch("inc.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    mypy = gate("mypy", command=[*gate("mypy")["command"][:-1], "--no-color-output", "{files}"])
    project.configure(gates=[*DEFAULT_GATES[:2], mypy, DEFAULT_GATES[3]])
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    ran_now = {n: executed(res, "inc", f"gate-{n}") for n in PY_GATES}
    assert ran_now == {"ruff-format": False, "ruff": False, "mypy": True, "pytest": False}
    assert not executed(res, "inc", "apply")
    assert "--no-color-output" in record_of(project, "inc", "mypy")["command"]


def test_patch_edit_outside_python_files_reruns_no_python_gate(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=DEFAULT_GATES)
    patch = project.patch("edit.py", UGLY)
    assert project.run("verify", f"patch={patch}").code == 0
    readme = "calc, now with mul\n"
    project.patch("edit.py", ops_patch(UGLY_OPS, {"README.txt": readme}))
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    assert executed(res, "edit", "apply")
    assert not any(executed(res, "edit", f"gate-{n}") for n in PY_GATES)
    # The fixer's earlier edit still counts, on top of the new README.
    result = result_of(project, "edit")
    assert result["files"] == ["README.txt", "calc/ops.py"]
    blobs = {c["path"]: c["blob"] for c in result["changes"]}
    assert blobs == {"README.txt": hash_object(readme), "calc/ops.py": hash_object(FORMATTED_OPS)}
    assert res.summary["FILES"] == "README.txt, calc/ops.py"
    assert (project.ws("edit") / "repo" / "calc" / "ops.py").read_text() == FORMATTED_OPS
    with zipfile.ZipFile(project.ws("edit") / "patched.zip") as zf:
        assert zf.read("files/README.txt").decode() == readme
        assert zf.read("files/calc/ops.py").decode() == FORMATTED_OPS


# --- bad input ---------------------------------------------------------------------------------


def test_a_gate_command_that_does_not_exist(make_project: ProjectFactory) -> None:
    project = make_project(gates=[{"name": "lint", "command": ["no-such-linter", "{files}"]}])
    res = project.run("verify", f"patch={project.patch('missing.py', README)}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"].startswith("lint: command 'no-such-linter' not found")
    assert "tool_env" in res.summary["REASON"]


# A file the patch adds, named like an option: as a bare argument it would switch ruff's rules
# off. It is valid Python, so the only finding left is the F401 of calc/ops.py.
RUFF_OPTION_NAME = "--config=lint.ignore=['ALL'] #.py"


def test_a_file_named_like_an_option_is_no_option_to_the_gate(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("ruff")])
    lint = OPS.replace('"""Arithmetic."""\n', '"""Arithmetic."""\n\nimport os\n')
    patch = project.patch("optname.py", ops_patch(lint, {RUFF_OPTION_NAME: "x = 1\n"}))
    res = project.run("verify", f"patch={patch}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"].startswith("ruff: calc/ops.py:3:8: F401"), res.out
    assert f"./{RUFF_OPTION_NAME}" in log_of(project, res)


def test_a_file_named_like_an_option_is_no_option_to_mypy(make_project: ProjectFactory) -> None:
    project = make_project(gates=[gate("mypy")])
    config = {"--config=m.py": "", "m.py": "[mypy]\nignore_errors = True\n"}
    patch = project.patch("mypyopt.py", ops_patch(TYPE_OPS, config))
    res = project.run("verify", f"patch={patch}")
    failed_cleanly(res, "GATES")
    log = log_of(project, res)
    assert "./--config=m.py" in log
    assert "calc/ops.py:13: error: Incompatible return value type" in log


def test_a_gate_printing_100_mb_is_capped_in_the_log(make_project: ProjectFactory) -> None:
    spew = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))"
    project = make_project(gates=[{"name": "spew", "command": ["python", "-c", spew]}])
    res = project.run("verify", f"patch={project.patch('spew.py', README)}")
    assert res.code == 0, res.out
    log = project.path / res.summary["LOG"]
    assert log.stat().st_size < 11 * 1024 * 1024  # output_cap_mb: 10 by default
    assert "[patchgate: output truncated after 10485760 bytes;" in log.read_text()
    assert record_of(project, "spew", "spew")["output_truncated"] is True
    assert len(res.out) < 10_000  # the console gets the summary, not the output


@pytest.mark.parametrize(
    ("gates", "expected"),
    [
        pytest.param(
            [{"name": "a", "command": ["true"]}, {"name": "a", "command": ["false"]}],
            "duplicate gate name 'a'",
            id="duplicate-name",
        ),
        pytest.param(
            [{"name": "a", "command": ["true"], "colour": "red"}],
            "gates.0: Additional properties are not allowed ('colour' was unexpected)",
            id="unknown-key",
        ),
        pytest.param(
            [{"name": "a", "command": "ruff check"}],
            "gates.0.command: 'ruff check' is not of type 'array'",
            id="command-not-a-list",
        ),
    ],
)
def test_invalid_gate_config_is_one_config_line(
    make_project: ProjectFactory, gates: list[dict[str, Any]], expected: str
) -> None:
    project = make_project(gates=gates)
    before = project.state()
    res = project.run("verify", f"patch={project.patch('cfg.py', README)}")
    failed_cleanly(res, "CONFIG")
    assert expected in res.summary["REASON"]
    assert "\n" not in res.summary["REASON"]
    assert project.state() == before


def test_junit_placeholder_on_a_gate_that_writes_none(make_project: ProjectFactory) -> None:
    quiet = {"name": "quiet", "command": ["python", "-c", "pass", "--junitxml={junit}"]}
    project = make_project(gates=[quiet])
    res = project.run("verify", f"patch={project.patch('quiet.py', README)}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == "quiet wrote no JUnit XML to {junit}; fix the gate's command"


def test_a_suite_that_collects_no_tests_fails(make_project: ProjectFactory) -> None:
    command = [*gate("pytest")["command"], "calc"]  # calc/ holds no test files
    project = make_project(gates=[gate("pytest", command=command)])
    res = project.run("verify", f"patch={project.patch('notests.py', ADD_MUL)}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == (
        "pytest: no tests were collected (exit 5); add tests or drop the gate"
    )
    assert record_of(project, "notests", "pytest")["exit_code"] == 5


# --- reading what the tools print --------------------------------------------------------------


def test_ruff_full_and_concise_output_give_the_same_findings(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import os\nimport sys\n")
    ruff = Path(sys.executable).parent / "ruff"
    outputs = [
        subprocess.run(
            (str(ruff), "check", "--no-cache", f"--output-format={fmt}", "bad.py"),
            cwd=tmp_path, capture_output=True, text=True, check=False,
        ).stdout
        for fmt in ("full", "concise")
    ]  # fmt: skip
    full, concise = (findings(out) for out in outputs)
    assert (
        full
        == concise
        == [
            "bad.py: F401 [*] `os` imported but unused",
            "bad.py: F401 [*] `sys` imported but unused",
        ]
    )
    assert first_error(outputs[0], 1) == "bad.py:1:8: F401 [*] `os` imported but unused"


def test_pytest_summary_line_is_the_reason_without_junit() -> None:
    output = (
        "F.                                     [100%]\n=== FAILURES ===\n"
        "tests/test_ops.py:6: AssertionError\n=== short test summary info ===\n"
        "FAILED tests/test_ops.py::test_add - assert 6 == 5\n1 failed, 1 passed in 0.03s\n"
    )
    assert first_error(output, 1) == "tests/test_ops.py::test_add failed: assert 6 == 5"


def test_junit_test_ids_follow_pytest_node_ids(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_k.py").write_text("")
    repo = str(tmp_path)
    assert node_id("tests.test_k", "test_p[1]", repo) == "tests/test_k.py::test_p[1]"
    assert node_id("tests.test_k.TestA", "test_x", repo) == "tests/test_k.py::TestA::test_x"
    assert node_id("", "tests.test_k", repo) == "tests/test_k.py"  # a collection error
    assert node_id("tests.test_k.TestA", "test_x") == "tests/test_k.py::TestA::test_x"


def test_a_finding_that_moved_is_the_same_finding() -> None:
    before = "m.py:2: error: Incompatible return value type  [return-value]\n"
    after = "m.py:9: error: Incompatible return value type  [return-value]\n"
    assert findings(before) == findings(after)


# A patch that breaks add() and plants, where git ignores it (__pycache__/), bytecode of the
# good add() stamped with the broken source's mtime and size: Python would import the planted
# bytecode, the tests would pass, and the broken source would land.
PLANTED_PYC = script(
    ["calc/ops.py"],
    "import importlib.util, os\n"
    "from importlib._bootstrap_external import _code_to_timestamp_pyc\n"
    'good = Path("calc/ops.py").read_text()\n'
    'Path("calc/ops.py").write_text(good.replace("return a + b", "return a - b"))\n'
    'st = os.stat("calc/ops.py")\n'
    'pyc = Path(importlib.util.cache_from_source("calc/ops.py"))\n'
    "pyc.parent.mkdir(exist_ok=True)\n"
    'code = compile(good, "calc/ops.py", "exec")\n'
    "pyc.write_bytes(_code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size))",
)


def test_what_a_patch_writes_where_git_ignores_it_never_reaches_a_gate(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("pytest")])
    res = project.run("verify", f"patch={project.patch('planted.py', PLANTED_PYC)}")
    failed_cleanly(res, "GATES")
    assert "tests/test_ops.py::test_add failed" in res.summary["REASON"]
    assert (project.ws("planted") / "repo" / "calc" / "ops.py").exists()
    assert not (project.ws("planted") / "repo" / "calc" / "__pycache__").exists()
    log = (project.path / res.summary["LOG"]).read_text()
    assert "removed 1 path(s) the patch wrote that git ignores" in log


# The same plant, done by the patched module itself when it is imported: a fixing gate that
# imports the repository's code (a code generator) runs it with the worktree writable.
PLANTING_OPS = (
    OPS.replace('"""Arithmetic."""\n', '"""Arithmetic."""\n\nimport importlib.util\nimport os\n')
    .replace("return a + b", "return a - b")
    .replace("\n\ndef add", f"\nGOOD = {OPS!r}\n\n\ndef add", 1)
    + "\n\ntry:\n"
    "    from importlib._bootstrap_external import _code_to_timestamp_pyc\n\n"
    "    st = os.stat(__file__)\n"
    "    pyc = importlib.util.cache_from_source(__file__)\n"
    "    os.makedirs(os.path.dirname(pyc), exist_ok=True)\n"
    '    with open(pyc, "wb") as fh:\n'
    '        code = compile(GOOD, __file__, "exec")\n'
    "        fh.write(_code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size))\n"
    "except OSError:\n"
    "    pass  # a read-only worktree: a judging gate\n"
)
GENERATOR = {"name": "gen", "command": ["{python}", "-c", "import calc.ops"], "fixes": True}


def test_what_a_fixing_gate_leaves_where_git_ignores_it_never_reaches_the_next_gate(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[GENERATOR, gate("pytest")])
    res = project.run("verify", f"patch={project.patch('gen.py', ops_patch(PLANTING_OPS))}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"].startswith("pytest: tests/test_ops.py::test_add failed")
    assert record_of(project, "gen", "gen")["verdict"] == "pass"
    log = log_of(project, res)
    assert "gate gen: removed 1 path(s) written where git ignores them" in log
    assert "calc/__pycache__/" in log


def test_what_an_unjailed_gate_leaves_where_git_ignores_it_is_removed(
    make_project: ProjectFactory,
) -> None:
    litter = "import os; os.makedirs('calc/__pycache__'); open('calc/__pycache__/x.pyc', 'w')"
    look = "import os, sys; sys.exit('litter seen' if os.path.exists('calc/__pycache__') else 0)"
    project = make_project(
        gates=[
            {"name": "litter", "command": ["python", "-c", litter]},
            {"name": "look", "command": ["python", "-c", look]},
        ],
        jail="none",
    )
    res = project.run("verify", f"patch={project.patch('litter.py', README)}")
    assert res.code == 0, res.out
    assert "gate litter: removed 1 path(s) written where git ignores them" in log_of(project, res)


# --- what a gate may write, and how patchgate reads it -----------------------------------------

# A test a patch adds (pytest runs it) reaching for mypy's cache, and for the base run's, as a
# forger would: mypy trusts its cache, so a forged entry lets the next attempt's type error pass.
REACH_CACHES = """import os

import pytest


@pytest.mark.parametrize("target", ["../cache/mypy/forged", "../cache/.base/mypy/forged"])
def test_other_caches_are_out_of_reach(target: str) -> None:
    with pytest.raises(OSError):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as fh:
            fh.write("forged")
"""


def test_a_gate_cannot_write_another_gates_cache(make_project: ProjectFactory) -> None:
    project = make_project(gates=[gate("mypy"), gate("pytest")])
    patch = project.patch("reach.py", ops_patch(OPS + MUL, {"tests/test_reach.py": REACH_CACHES}))
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out  # the writes failed inside the jail, so the test passed
    assert (project.ws("reach") / "cache" / "mypy").is_dir()
    assert not list((project.ws("reach") / "cache").glob("**/forged"))
    project.patch("reach.py", TYPE)
    res = project.run("verify", f"patch={patch}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"].startswith("mypy: calc/ops.py:13: error: Incompatible return")


def test_the_base_run_gets_a_cache_no_patch_run_wrote(make_project: ProjectFactory) -> None:
    # A gate keeping state in {cache}, as mypy does; what it runs in the patch run (a patch's
    # tests, a mypy plugin of the patch's) could write anything there. It fails, so with
    # baseline=1 it runs again on the base, whose result every workspace on that base trusts.
    keep = (
        "import os, sys; print('cache holds', sorted(os.listdir(sys.argv[1]))); "
        "open(os.path.join(sys.argv[1], 'state'), 'w').close(); sys.exit(1)"
    )
    project = make_project(
        gates=[{"name": "keep", "command": ["python", "-c", keep, "{cache}"]}], baseline=True
    )
    res = project.run("verify", f"patch={project.patch('keep.py', README)}")
    failed_cleanly(res, "GATES")
    log = log_of(project, res)
    assert "baseline keep: running on base" in log
    assert log.splitlines().count("cache holds []") == 2, log  # the patch run, the base run


def junit_replaced_by(statement: str, exit_code: int) -> str:
    """A patch adding a test that runs ``statement`` on ``junit``, the path pytest writes its
    JUnit XML to when the session ends, and exits before it does."""
    test = (
        "import os\n\nimport pytest\n\n\n"
        "def test_swap(request: pytest.FixtureRequest) -> None:\n"
        "    junit = request.config.option.xmlpath\n"
        f"    {statement}\n"
        f"    os._exit({exit_code})\n"
    )
    return ops_patch(OPS + MUL, {"tests/test_swap.py": test})


def test_a_junit_file_swapped_for_a_symlink_is_not_followed(make_project: ProjectFactory) -> None:
    project = make_project(gates=[gate("pytest")])
    outside = project.path / "host.xml"  # outside the jail: a host file patchgate can read
    outside.write_text(
        '<testsuite><testcase classname="tests.test_x" name="t">'
        '<failure message="HOST SECRET hunter2"/></testcase></testsuite>'
    )
    patch = junit_replaced_by(f"os.symlink({str(outside)!r}, junit)", 1)
    res = project.run("verify", f"patch={project.patch('link.py', patch)}")
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"] == (
        "pytest: the gate's JUnit file is not a regular file (a symbolic link); it was not "
        "read; the gate must write {junit} as a plain file"
    )
    assert "hunter2" not in res.out + log_of(project, res)
    assert "hunter2" not in (project.ws("link") / "result.json").read_text()


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        pytest.param("os.mkfifo(junit)", "is not a regular file (a FIFO)", id="fifo"),
        # a directory: the same verdict as a FIFO (test_units_parsing reads one of each kind)
        pytest.param("open(junit, 'wb').truncate(65 << 20)", "is larger than 64 MiB", id="too-big"),
    ],
)
def test_a_junit_file_that_is_no_plain_file_fails_the_gate_promptly(
    make_project: ProjectFactory, statement: str, why: str
) -> None:
    project = make_project(gates=[gate("pytest")])
    patch = project.patch("odd.py", junit_replaced_by(statement, 0))
    start = time.monotonic()
    res = project.run("verify", f"patch={patch}", timeout=60)
    assert time.monotonic() - start < 30
    failed_cleanly(res, "GATES")
    assert res.summary["REASON"].startswith(f"pytest: the gate's JUnit file {why}; it was not read")
    project.patch("odd.py", ADD_MUL)  # the next attempt is judged on a JUnit file of its own
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
