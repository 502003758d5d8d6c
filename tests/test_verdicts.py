"""Right verdicts (issue 11): a baseline that cannot be fooled, fixers that keep to the patch's
lines, build gates that can build, tests that import the workspace, Atlas timeouts.

Pure logic is tested on texts and hand-made files; a few end-to-end runs check what a user sees
(the summary, result.json, the gate record, trailers, provenance, history, the audit).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from conftest import ADD_MUL, CALC, Project, ProjectFactory, git, make_repo, script
from patchgate import jail, proc, provenance, trailers, verdicts
from patchgate.audit_history import commit_of
from patchgate.config import DEFAULT_GATES, Gate, effective_gates, load
from patchgate.errors import PatchgateError
from patchgate.gates import findings, imports_project, parse_findings, parse_junit, verdict_of

OPS = CALC["calc/ops.py"]


def gate(name: str, **changes: Any) -> dict[str, Any]:
    found = copy.deepcopy(next(g for g in DEFAULT_GATES if g["name"] == name))
    found.update(changes)
    return found


def ops_patch(text: str) -> str:
    return script(["calc/ops.py"], f"Path('calc/ops.py').write_text({text!r})")


def commit(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base change")


def record_of(project: Project, issue: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.ws(issue) / "gates" / f"{name}.json").read_text())
    return data


def result_of(project: Project, issue: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.ws(issue) / "result.json").read_text())
    return data


# --- findings are counted ----------------------------------------------------------------------

NONE_MSG = "E711 Comparison to `None` should be `cond is None`"


def test_one_more_finding_of_a_kind_the_file_had_is_new() -> None:
    base = findings(f"a.py:3:8: {NONE_MSG}\na.py:9:8: {NONE_MSG}\n")
    patch = [verdicts.Finding(*f) for f in parse_findings(
        f"a.py:3:8: {NONE_MSG}\na.py:9:8: {NONE_MSG}\na.py:153:8: {NONE_MSG}\n"
    )]  # fmt: skip
    new = verdicts.new_findings(patch, base, {"a.py": {153}})
    assert [(str(f), n, b) for f, n, b in new] == [(f"a.py:153:8: {NONE_MSG}", 3, 2)]
    assert verdicts.describe_new(*new[0]) == (
        f"a.py:153:8: {NONE_MSG} (new: 3 in the file, 2 on the base)"
    )


def test_as_many_findings_as_on_the_base_are_none_new_even_on_other_lines() -> None:
    base = findings(f"a.py:3:8: {NONE_MSG}\n")
    patch = [verdicts.Finding("a.py", "40:8", NONE_MSG)]
    assert verdicts.new_findings(patch, base, {"a.py": {40}}) == []


def test_a_finding_of_a_new_kind_is_new_and_says_so() -> None:
    patch = [verdicts.Finding("src/a.py", "153:5", "C408 Unnecessary `dict()` call")]
    (new,) = verdicts.new_findings(patch, [], {})
    assert verdicts.describe_new(*new) == (
        "src/a.py:153:5: C408 Unnecessary `dict()` call (new; not on the base)"
    )


def test_findings_keep_every_occurrence() -> None:
    assert findings(f"a.py:1:1: {NONE_MSG}\na.py:2:1: {NONE_MSG}\n") == [f"a.py: {NONE_MSG}"] * 2


# --- JUnit: a run in which no test ran ---------------------------------------------------------

COLLECTION_ERROR = (
    '<testsuites><testsuite><testcase classname="" name="tests.test_x">'
    '<error message="collection failure">ImportError while importing test module.\n'
    "Traceback:\nE   ModuleNotFoundError: No module named 'calc'</error></testcase>"
    "</testsuite></testsuites>"
)


def junit_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "junit.xml"
    path.write_text(body)
    return str(path)


def judged(tmp_path: Path, body: str, code: int) -> tuple[str, str]:
    done = proc.Completed(("pytest",), code, "", 0.1)
    return verdict_of(Gate.from_json(gate("pytest"), 600), done, junit_file(tmp_path, body), None)


def test_a_collection_error_is_a_failure_of_its_file_with_the_import_error() -> None:
    tests = parse_junit(COLLECTION_ERROR.encode())
    assert tests == {"tests/test_x.py": ("fail", "ModuleNotFoundError: No module named 'calc'")}
    assert verdicts.tests_that_ran({"tests/test_x.py": "fail"}) == []


def test_a_run_of_only_collection_errors_fails(tmp_path: Path) -> None:
    assert judged(tmp_path, COLLECTION_ERROR, 2) == (
        "fail",
        "pytest: no test ran; tests/test_x.py failed to collect: ModuleNotFoundError: No module "
        "named 'calc'; fix the import error (a collection error is a failure of that test file)",
    )


def test_an_empty_junit_run_never_passes_even_with_exit_0(tmp_path: Path) -> None:
    verdict, reason = judged(tmp_path, "<testsuites><testsuite/></testsuites>", 0)
    assert verdict == "fail"
    assert reason.startswith("pytest: no test ran (the JUnit file lists none)")


def test_an_empty_junit_run_that_failed_says_what_the_tool_said(tmp_path: Path) -> None:
    done = proc.Completed(("pytest",), 4, "ERROR: file or directory not found: nope\n", 0.1)
    junit = junit_file(tmp_path, "<testsuites><testsuite/></testsuites>")
    assert verdict_of(Gate.from_json(gate("pytest"), 600), done, junit, None) == (
        "fail",
        "pytest: no test ran; exit 4: ERROR: file or directory not found: nope",
    )


def test_a_run_where_every_test_skipped_fails(tmp_path: Path) -> None:
    body = (
        '<testsuite><testcase classname="tests.test_x" name="test_a"><skipped/></testcase>'
        "</testsuite>"
    )
    assert judged(tmp_path, body, 0)[1].startswith("pytest: no test ran (1 skipped)")


def test_a_passing_case_without_a_classname_counts_as_run(tmp_path: Path) -> None:
    assert judged(tmp_path, '<testsuite><testcase name="check_a"/></testsuite>', 0) == ("pass", "")


def test_a_run_where_one_test_ran_is_judged_as_usual(tmp_path: Path) -> None:
    body = '<testsuite><testcase classname="tests.test_x" name="test_a"/></testsuite>'
    assert judged(tmp_path, body, 0) == ("pass", "")


# --- lines a patch changed, a fixer's hunks ----------------------------------------------------


def test_changed_lines_are_the_new_and_replaced_lines() -> None:
    assert verdicts.changed_lines("a\nb\nc\n", "a\nB\nc\nd\n") == {2, 4}
    assert verdicts.changed_lines(None, "a\nb\n") == {1, 2}
    assert verdicts.changed_lines("a\nb\nc\n", "a\nc\n") == {2}  # a deletion marks its place


UGLY_BASE = "def sub(a:int,b:int)->int:\n    return a-b\n"
UGLY_NEW = UGLY_BASE + "\n\ndef mul(a:int,b:int)->int:\n    return a*b\n"
FORMATTED_ALL = (
    "def sub(a: int, b: int) -> int:\n    return a - b\n"
    "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
)


def test_a_fixers_hunks_off_the_patchs_lines_are_undone() -> None:
    limited = verdicts.limit_fix(UGLY_BASE, UGLY_NEW, FORMATTED_ALL)
    assert limited.text == UGLY_BASE + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
    assert (limited.kept, limited.dropped) == (1, 1)


def test_a_fixer_on_a_new_file_keeps_everything() -> None:
    assert verdicts.limit_fix(None, UGLY_BASE, FORMATTED_ALL) == (FORMATTED_ALL, 1, 0)


def test_a_blank_line_inserted_next_to_a_patched_line_is_kept() -> None:
    base = "x = 1\n"
    patched = "x = 1\ndef f():\n    pass\n"
    fixed = "x = 1\n\n\ndef f():\n    pass\n"
    assert verdicts.limit_fix(base, patched, fixed).text == fixed


# --- verdict labels: trailers, history, audit --------------------------------------------------


def test_an_excused_gate_is_never_a_plain_pass_in_trailers_or_history() -> None:
    gates = {"ruff": "excused", "mypy": "pass", "pytest": "excused"}
    value = trailers.verification_value("pass", gates)
    assert value == "pass; gates: ruff=excused, mypy=pass, pytest=excused"
    assert trailers.parse_verification(value) == ("pass", gates)
    assert trailers.verdict_label("pass", gates) == "pass (excused: ruff, pytest)"
    assert trailers.verdict_label("pass", {"ruff": "pass"}) == "pass"
    info = trailers.CommitInfo("a" * 40, "s", {trailers.VERIFICATION: [value]})
    assert commit_of(info).verdict == "pass (excused: ruff, pytest)"


def test_a_verification_value_without_gates_parses() -> None:
    assert trailers.parse_verification("pass") == ("pass", {})


# --- configuration: timeouts and build gates ---------------------------------------------------


def configured(tmp_path: Path, text: str) -> list[Gate]:
    (tmp_path / "patchgate.yaml").write_text(text)
    return effective_gates(load(str(tmp_path), {}))


def test_build_and_test_timeouts_apply_to_the_atlas_gates(tmp_path: Path) -> None:
    gates = configured(
        tmp_path,
        "gates: []\ngate_timeout: 100\nbuild_timeout: 7\ntest_timeout: 9\n"
        "build_command: make -j4\ntest_commands: [make check, make lint]\n",
    )
    assert [(g.name, g.timeout, g.build) for g in gates] == [
        ("build", 7, True),
        ("test-1", 9, False),
        ("test-2", 9, False),
    ]


def test_without_build_and_test_timeouts_gate_timeout_applies(tmp_path: Path) -> None:
    gates = configured(tmp_path, "gates: []\ngate_timeout: 100\nbuild_command: make\n")
    assert gates[0].timeout == 100


@pytest.mark.parametrize(
    "text",
    [
        "build_timeout: 0\n",
        "test_timeout: -3\n",
        "build_timeout: soon\n",
        "gates: [{name: b, command: [make], build: yes please}]\n",
    ],
)
def test_a_bad_timeout_or_build_key_is_one_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(PatchgateError) as err:
        configured(tmp_path, text)
    assert err.value.stage == "CONFIG"


def test_a_gate_that_builds_and_fixes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PatchgateError) as err:
        configured(tmp_path, "gates: [{name: b, command: [make], build: true, fixes: true}]\n")
    assert err.value.stage == "CONFIG"
    assert "'b' has both build and fixes" in err.value.message


def test_a_build_gates_copy_is_bound_writable_at_the_worktrees_path(tmp_path: Path) -> None:
    work, copy_ = tmp_path / "repo", tmp_path / "scratch"
    work.mkdir()
    copy_.mkdir()
    spec = jail.JailSpec("bwrap", str(work), workdir_source=str(copy_), workdir_readonly=False)
    argv = jail.command(["make"], spec)
    assert any(argv[i : i + 3] == ["--bind", str(copy_), str(work)] for i in range(len(argv)))
    assert ["--bind", str(work), str(work)] not in [argv[i : i + 3] for i in range(len(argv))]


def test_unjailed_a_build_gate_runs_in_its_copy(tmp_path: Path) -> None:
    work, copy_ = tmp_path / "repo", tmp_path / "scratch"
    work.mkdir()
    copy_.mkdir()
    spec = jail.JailSpec("none", str(work), workdir_source=str(copy_))
    done = jail.run(["pwd"], spec, env={}, timeout=10, output_cap=4096)
    assert done.output.strip() == str(copy_)


# --- the workspace on the import path ----------------------------------------------------------


def test_pythonpath_puts_the_gates_own_entries_then_src_then_the_root(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    assert verdicts.python_path(str(tmp_path), "vendor") == os.pathsep.join(
        ["vendor", str(tmp_path / "src"), str(tmp_path)]
    )
    flat = tmp_path / "flat"
    flat.mkdir()
    assert verdicts.python_path(str(flat), None) == str(flat)


def test_only_gates_that_run_the_projects_code_get_the_workspace_on_pythonpath() -> None:
    runs = {g["name"]: imports_project(Gate.from_json(g, 600)) for g in DEFAULT_GATES}
    assert runs == {"ruff-format": False, "ruff": False, "mypy": False, "pytest": True}
    assert imports_project(Gate("b", ("make",), build=True))
    assert imports_project(Gate("t", ("./run-tests",), atlas="test"))
    assert imports_project(Gate("u", ("python3", "-m", "unittest")))
    assert not imports_project(Gate("f", ("flake8", "{files}")))


def fake_install(env: Path, name: str, source: Path, editable: bool) -> None:
    site = env / "lib" / "python3.11" / "site-packages"
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "top_level.txt").write_text(f"{name}\n")
    dir_info = {"editable": True} if editable else {}
    (info / "direct_url.json").write_text(
        json.dumps({"url": f"file://{source}", "dir_info": dir_info})
    )
    if not editable:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("")


def test_a_copy_installed_from_live_that_would_shadow_the_workspace_is_named(
    tmp_path: Path,
) -> None:
    live, repo, env = tmp_path / "live", tmp_path / "ws", tmp_path / "env"
    (repo / "lib" / "pkg").mkdir(parents=True)
    (repo / "lib" / "pkg" / "__init__.py").write_text("")
    fake_install(env, "pkg", live, editable=False)
    fake_install(env, "other", tmp_path / "elsewhere", editable=False)
    installed = verdicts.installed_from(str(env), str(live))
    assert [i.name for i in installed] == ["pkg"]
    plan = verdicts.plan_imports(str(repo), installed, str(live))
    assert plan.mapped == {}
    reason = verdicts.shadow_reason("pytest", str(repo), plan.shadowing)
    assert reason.startswith(
        f"pytest: an installed copy of 'pkg' ({env}/lib/python3.11/site-packages/pkg, from {live})"
        " would be imported instead of the workspace's lib/pkg; install the project editable"
    )
    # The gate's own PYTHONPATH naming that folder settles it.
    assert verdicts.plan_imports(str(repo), installed, str(live), "lib") == ({}, [])


def test_a_package_in_src_or_the_root_wins_over_an_installed_copy(tmp_path: Path) -> None:
    live, repo, env = tmp_path / "live", tmp_path / "ws", tmp_path / "env"
    (repo / "src" / "pkg").mkdir(parents=True)
    (repo / "src" / "pkg" / "__init__.py").write_text("")
    fake_install(env, "pkg", live, editable=False)
    installed = verdicts.installed_from(str(env), str(live))
    assert verdicts.plan_imports(str(repo), installed, str(live)) == ({}, [])


def test_an_editable_install_onto_another_folder_of_live_is_mapped_to_the_workspace(
    tmp_path: Path,
) -> None:
    live, repo, env = tmp_path / "live", tmp_path / "ws", tmp_path / "env"
    (repo / "code").mkdir(parents=True)
    (repo / "code" / "__init__.py").write_text("")
    fake_install(env, "pkg", live, editable=True)
    fake_install(env, "gone", live, editable=True)  # its folder is not in the workspace
    site = env / "lib" / "python3.11" / "site-packages"
    (site / "__editable___pkg_0_1_finder.py").write_text(
        f"MAPPING = {{'pkg': '{live}/code', 'gone': '{live}/gone'}}\n"
    )
    installed = verdicts.installed_from(str(env), str(live))
    assert [(i.name, i.where) for i in installed] == [
        ("gone", f"{live}/gone"),
        ("pkg", f"{live}/code"),
    ]
    plan = verdicts.plan_imports(str(repo), installed, str(live))
    assert plan == ({"pkg": str(repo / "code")}, [])
    links = tmp_path / "links"
    verdicts.link_imports(str(links), plan.mapped)
    verdicts.link_imports(str(links), plan.mapped)  # again: the folder is made anew
    assert os.readlink(links / "pkg") == str(repo / "code")
    assert os.listdir(links) == ["pkg"]
    # What a gate may leave in its cache folder is removed, not followed.
    (links / "planted").mkdir()
    (links / "planted" / "x.py").write_text("")
    verdicts.link_imports(str(links), plan.mapped)
    assert os.listdir(links) == ["pkg"]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("")
    shutil.rmtree(links)
    links.symlink_to(victim)
    verdicts.link_imports(str(links), plan.mapped)
    assert not links.is_symlink() and os.listdir(victim) == ["keep.txt"]


def test_a_gate_that_would_import_an_installed_copy_fails_without_running(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("pytest")])
    commit(project.live, {"lib/opslib/__init__.py": "X = 1\n"})
    env = project.path / "env"
    fake_install(env, "opslib", project.live, editable=False)
    project.configure(tool_env=str(env))
    diff = "--- a/README.txt\n+++ b/README.txt\n@@ -1 +1 @@\n-calc\n+calc!\n"
    res = project.run("verify", f"patch={project.patch('readme.diff', diff)}", "all_gates=1")
    assert res.code != 0 and res.summary["STAGE"] == "GATES", res.out
    assert res.summary["REASON"].startswith(
        f"pytest: an installed copy of 'opslib' ({env}/lib/python3.11/site-packages/opslib, "
        f"from {project.live}) would be imported instead of the workspace's lib/opslib"
    )
    record = record_of(project, "readme", "pytest")
    assert record["verdict"] == "fail" and "exit_code" not in record  # it never ran


def test_fixed_and_excused_summary_lines(tmp_path: Path) -> None:
    records = {
        "black": {"fixed": ["a.py", "b.py"], "verdict": "pass"},
        "ruff-format": {"fixed": [], "fix_dropped": {"c.py": 2}, "verdict": "pass"},
        "mypy": {"verdict": "excused", "reason": "mypy: failure pre-existing on the base"},
        "pytest": {"verdict": "pass"},
    }
    for name, record in records.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    (tmp_path / "broken.json").write_text("{")
    gates = [*records, "broken", "missing"]
    assert verdicts.summary_lines(gates, lambda n: str(tmp_path / f"{n}.json")) == {
        "FIXED": "a.py, b.py (black); (none) (ruff-format; its edits off the patch's lines "
        "undone in c.py)",
        "EXCUSED": "mypy: failure pre-existing on the base",
    }


def test_a_broken_direct_url_is_no_install(tmp_path: Path) -> None:
    env = tmp_path / "env"
    fake_install(env, "pkg", tmp_path, editable=False)
    info = env / "lib" / "python3.11" / "site-packages" / "pkg-0.1.dist-info"
    (info / "direct_url.json").write_text("{not json")
    assert verdicts.installed_from(str(env), str(tmp_path)) == []


# --- end to end: baseline ----------------------------------------------------------------------

NONE_BASE = OPS + '\n\ndef name() -> str:\n    return f"calc"\n'
NONE_MORE = NONE_BASE + '\n\ndef title() -> str:\n    return f"Calc"\n'
NEW_LINE = len(NONE_MORE.splitlines())  # the last line holds the new finding


def test_baseline_fails_one_more_finding_of_a_kind_already_in_the_file(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("ruff")], baseline=True)
    commit(project.live, {"calc/ops.py": NONE_BASE})
    before = project.state()
    res = project.run("verify", f"patch={project.patch('more.py', ops_patch(NONE_MORE))}")
    assert res.code != 0 and res.summary["STAGE"] == "GATES", res.out
    assert res.summary["REASON"] == (
        f"ruff: calc/ops.py:{NEW_LINE}:12: F541 [*] f-string without any placeholders "
        "(new: 2 in the file, 1 on the base)"
    )
    assert project.state() == before


def test_a_package_broken_at_import_fails_under_baseline_though_the_base_is_broken_too(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[gate("pytest")], baseline=True)
    commit(project.live, {"calc/__init__.py": 'raise RuntimeError("boom")\n'})
    res = project.run("verify", f"patch={project.patch('mul.py', ADD_MUL)}")
    assert res.code != 0 and res.summary["STAGE"] == "GATES", res.out
    assert res.summary["REASON"].startswith(
        "pytest: no test ran; tests/test_ops.py failed to collect: RuntimeError: boom"
    )
    assert record_of(project, "mul", "pytest")["verdict"] == "fail"


def test_what_the_baseline_excuses_is_excused_everywhere(make_project: ProjectFactory) -> None:
    project = make_project(gates=[gate("ruff")], baseline=True)
    bare = project.path / "remote.git"
    git(project.path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(project.live, "remote", "add", "origin", str(bare))
    with_os = OPS.replace('"""Arithmetic."""\n', '"""Arithmetic."""\n\nimport os\n')
    commit(project.live, {"calc/ops.py": with_os})
    git(project.live, "push", "-q", "origin", "main")
    mul = with_os + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
    res = project.run("verify", f"patch={project.patch('mul.py', ops_patch(mul))}")
    assert res.code == 0, res.out
    assert res.summary["EXCUSED"] == (
        "ruff: failure pre-existing on the base (1 finding(s)), none added by the patch "
        "(first: calc/ops.py:3:8: F401 [*] `os` imported but unused)"
    )
    assert result_of(project, "mul")["gates"]["ruff"]["verdict"] == "excused"
    assert record_of(project, "mul", "ruff")["verdict"] == "excused"
    events = provenance.read_events(str(project.path))
    assert [e["gates"] for e in events if e["event"] == "verify_pass"] == [{"ruff": "excused"}]

    res = project.run("promote", "issue=mul")
    assert res.code == 0, res.out
    message = git(project.live, "log", "-1", "--format=%B")
    assert "Patchgate-Verification: pass; gates: ruff=excused" in message
    history = project.run("history")
    assert "pass (excused: ruff)" in history.out, history.out
    project.run("audit")
    report = json.loads((project.path / "audit" / "results" / "audit.json").read_text())
    assert [p["verdict"] for p in report["patches"]] == ["pass (excused: ruff)"]


# --- end to end: a fixer keeps to the patch's lines --------------------------------------------


def test_a_fixer_rewrites_only_the_lines_the_patch_changed(make_project: ProjectFactory) -> None:
    # all_gates: a patch that changes no Python file still runs the fixer, on "." (all files).
    project = make_project(gates=[gate("ruff-format")], all_gates=True)
    commit(project.live, {"calc/ugly.py": UGLY_BASE, "calc/other.py": UGLY_BASE})
    patch = script(["calc/ugly.py"], f"Path('calc/ugly.py').write_text({UGLY_NEW!r})")
    readme = script(["README.txt"], "Path('README.txt').write_text('calc, documented\\n')")
    res = project.run(
        "verify", f"patch={project.patch('ugly.py', patch)},{project.patch('doc.py', readme)}"
    )
    assert res.code == 0, res.out
    repo = project.ws("ugly") / "repo"
    landed = (repo / "calc" / "ugly.py").read_text()
    assert landed == UGLY_BASE + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
    assert (repo / "calc" / "other.py").read_text() == UGLY_BASE
    assert result_of(project, "ugly")["summary"]["FIXED"] == (
        "calc/ugly.py (ruff-format; its edits off the patch's lines undone in calc/ugly.py)"
    )
    assert record_of(project, "ugly", "ruff-format")["fix_dropped"] == {"calc/ugly.py": 1}
    doc = result_of(project, "doc")
    assert doc["files"] == ["README.txt"]  # nothing the fixer did to the .py files stays
    assert doc["summary"]["FIXED"] == (
        "(none) (ruff-format; its edits off the patch's lines undone in calc/other.py, "
        "calc/ugly.py)"
    )


# --- end to end: a build gate builds, and its writes are thrown away ---------------------------

BUILD = (
    "import compileall, pathlib; pathlib.Path('build').mkdir(); "
    "pathlib.Path('build/out.txt').write_text('built'); compileall.compile_dir('calc', quiet=1)"
)
NOTHING_BUILT = (
    "import os, sys; sys.exit(os.path.exists('build') or os.path.exists('calc/__pycache__'))"
)


def test_a_build_gate_writes_a_copy_and_later_gates_see_the_verified_tree(
    make_project: ProjectFactory,
) -> None:
    project = make_project(
        build_command=["python", "-c", BUILD],
        test_commands=[["python", "-c", NOTHING_BUILT]],
        build_timeout=60,
    )
    res = project.run("verify", f"patch={project.patch('mul.py', ADD_MUL)}")
    assert res.code == 0, res.out
    result = result_of(project, "mul")
    assert result["build_status"] == "pass"
    assert result["gates"]["test-1"]["verdict"] == "pass"
    assert result["files"] == ["calc/ops.py"]
    assert not (project.ws("mul") / "repo" / "build").exists()
    assert not (project.ws("mul") / "scratch" / "build").exists()  # the copy is gone


# --- end to end: tests import the workspace from the project's own venv ------------------------

TINY = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "tinypkg"\nversion = "0.1"\n'
    ),
    "src/tinypkg/__init__.py": "def answer() -> int:\n    return 42\n",
    "tests/test_answer.py": (
        "from tinypkg import answer\n\n\ndef test_answer() -> None:\n    assert answer() == 42\n"
    ),
    ".gitignore": "__pycache__/\n*.egg-info/\nbuild/\n",
}


# The import name is not the folder's (setuptools package-dir), as in patchgate itself.
TINY_MAPPED = {
    "pyproject.toml": TINY["pyproject.toml"]
    + '\n[tool.setuptools]\npackages = ["tinypkg"]\npackage-dir = {tinypkg = "code"}\n',
    "code/__init__.py": TINY["src/tinypkg/__init__.py"],
    "tests/test_answer.py": TINY["tests/test_answer.py"],
    ".gitignore": TINY[".gitignore"],
}


def make_venv(path: Path, live: Path, *flags: str) -> Path:
    """A venv with tinypkg installed from ``live`` (``-e``: editable); pytest, setuptools and
    wheel come from patchgate's own venv through a .pth file (no index needed)."""
    subprocess.run((sys.executable, "-m", "venv", "--without-pip", str(path)), check=True)
    site = path / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "_patchgate_dev.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        (str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
         "--no-build-isolation", "--no-index", *flags, str(live)),
        check=True, capture_output=True, cwd=str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tinypkg's live repository, and two venvs: an editable install and a regular one."""
    root = tmp_path_factory.mktemp("tiny")
    live = make_repo(root / "live", TINY)
    mapped_live = make_repo(root / "mapped-live", TINY_MAPPED)
    return {
        "live": live,
        "editable": make_venv(root / "venv-editable", live, "-e"),
        "regular": make_venv(root / "venv-regular", live),
        "mapped-live": mapped_live,
        "mapped": make_venv(root / "venv-mapped", mapped_live, "-e"),
    }


BROKEN = script(
    ["src/tinypkg/__init__.py"],
    "Path('src/tinypkg/__init__.py').write_text('def answer() -> int:\\n    return 41\\n')",
)
DOUBLE = "def answer() -> int:\n    return 42\n\n\ndef double(x: int) -> int:\n    return 2 * x\n"
DOUBLE_TEST = (
    "from tinypkg import double\n\n\ndef test_double() -> None:\n    assert double(2) == 4\n"
)
EXTENDED = script(
    ["src/tinypkg/__init__.py", "tests/test_double.py"],
    f"Path('src/tinypkg/__init__.py').write_text({DOUBLE!r})\n"
    f"Path('tests/test_double.py').write_text({DOUBLE_TEST!r})",
)


def tiny_project(tmp_path: Path, live: Path, venv: Path) -> Project:
    project = Project(tmp_path / "project", live)
    (project.path / "patches").mkdir(parents=True)
    project.configure(
        live_repo=str(live),
        tool_env=str(venv),
        jail_binds=[sysconfig.get_paths()["purelib"]],
        gates=[gate("pytest")],
    )
    return project


def test_an_editable_install_of_a_renamed_folder_imports_the_workspace(
    tmp_path: Path, tiny: dict[str, Path]
) -> None:
    project = tiny_project(tmp_path, tiny["mapped-live"], tiny["mapped"])
    broken = BROKEN.replace("src/tinypkg/__init__.py", "code/__init__.py")
    extended = EXTENDED.replace("src/tinypkg/__init__.py", "code/__init__.py")
    res = project.run(
        "verify", f"patch={project.patch('broken.py', broken)},{project.patch('ext.py', extended)}"
    )
    assert result_of(project, "broken")["reason"] == (
        "pytest: tests/test_answer.py::test_answer failed: assert 41 == 42"
    ), res.out
    assert result_of(project, "ext")["verification_status"] == "pass", res.out
    links = project.ws("ext") / "cache" / "pytest" / ".imports"
    assert os.readlink(links / "tinypkg") == str(project.ws("ext") / "repo" / "code")


@pytest.mark.parametrize("install", ["editable", "regular"])
def test_the_default_pytest_gate_imports_the_workspace_not_the_installed_copy(
    tmp_path: Path, tiny: dict[str, Path], install: str
) -> None:
    project = Project(tmp_path / "project", tiny["live"])
    (project.path / "patches").mkdir(parents=True)
    project.configure(
        live_repo=str(tiny["live"]),
        tool_env=str(tiny[install]),
        jail_binds=[sysconfig.get_paths()["purelib"]],
        gates=[gate("pytest")],
    )
    before = project.state()
    res = project.run(
        "verify", f"patch={project.patch('broken.py', BROKEN)},{project.patch('ext.py', EXTENDED)}"
    )
    assert res.code != 0, res.out
    broken = result_of(project, "broken")
    assert broken["reason"] == (
        "pytest: tests/test_answer.py::test_answer failed: assert 41 == 42"
    ), res.out
    extended = result_of(project, "ext")
    assert extended["verification_status"] == "pass", res.out
    assert project.state() == before
