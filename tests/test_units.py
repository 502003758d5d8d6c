"""The pure logic, tested directly: each case costs milliseconds, not a doit run."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from patchgate import (
    apply,
    config,
    landing,
    liveguard,
    lock,
    prepare,
    redact,
    report,
    revertplan,
    rollback,
    scope,
)
from patchgate.errors import PatchgateError
from patchgate.jail import JailSpec, jail_spec, step_env
from patchgate.settings import RULES as SETTINGS_RULES
from patchgate.settings import Settings, settings_of
from patchgate.workspace import Meta, Result, Workspace

# --- scope.judge: what the patch changed against what it declared -------------------------------

RULES = {"allow_undeclared": False, "allow_untouched": False, "allow_noop": False}


def change(path: str, status: str = "M", mode: str = "100644") -> dict[str, str]:
    return {"path": path, "status": status, "mode": mode, "blob": "0" * 40}


def test_scope_passes_exactly_the_declared_files() -> None:
    assert scope.judge(["a.py", "b.py"], [change("a.py"), change("b.py")], RULES) == []


def test_scope_names_undeclared_and_untouched_files() -> None:
    problems = scope.judge(["a.py", "c.py"], [change("a.py"), change("b.py")], RULES)
    assert any("not declared in FILES: b.py" in p for p in problems)
    assert any("declared in FILES but not changed: c.py" in p for p in problems)


def test_scope_overrides_lift_each_rule() -> None:
    rules = {"allow_undeclared": True, "allow_untouched": True, "allow_noop": True}
    assert scope.judge(["c.py"], [change("b.py")], rules) == []
    assert scope.judge(["c.py"], [], rules) == []


def test_scope_refuses_a_patch_that_changed_nothing() -> None:
    assert "changed nothing" in scope.judge([], [], RULES)[0]


def test_scope_refuses_a_nested_repository_whatever_the_overrides() -> None:
    rules = {k: True for k in RULES}
    problems = scope.judge(["sub"], [change("sub", "A", "160000")], rules)
    assert problems and "git repository inside the workspace" in problems[0]


def test_scope_refuses_a_file_turned_into_a_folder() -> None:
    changes = [change("x", "D"), change("x/y", "A")]
    assert scope.swapped(changes) == ["x"]
    assert "turns from a file into a folder" in scope.judge(["x", "x/y"], changes, RULES)[0]


# --- diffs: the paths a diff names -------------------------------------------------------------


def test_unquote_reads_gits_c_quoted_names() -> None:
    assert apply.unquote('"a/t\\303\\251st" rest') == ("a/tést", " rest")
    assert apply.unquote('"a\\tb"') == ("a\tb", "")
    assert apply.unquote("plain") == ("plain", "")


def test_git_header_names_split_names_with_spaces() -> None:
    assert apply.git_header_names("a/x y b/x y") == ["a/x y", "b/x y"]
    assert apply.git_header_names('"a/\\303\\251" "b/\\303\\251"') == ["a/é", "b/é"]


def test_diff_paths_include_copy_and_rename_sources(tmp_path: Path) -> None:
    diff = tmp_path / "p.diff"
    diff.write_text(
        "diff --git a/x b/y\ncopy from /etc/passwd\ncopy to y\n"
        "--- a/x\n+++ b/y\n@@ -0,0 +1 @@\n+1\n"
    )
    assert "/etc/passwd" in apply.diff_paths(str(diff))
    with pytest.raises(PatchgateError) as err:
        apply.check_diff_paths(str(diff), "APPLY")
    assert "outside the repository" in err.value.message


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("a/../../x", "'..'"),
        (".git/config", "into .git"),
        (".", "empty"),
    ],
)
def test_check_declared_refuses_paths_outside_the_repository(entry: str, why: str) -> None:
    with pytest.raises(PatchgateError) as err:
        apply.check_declared([entry], "patch p.py")
    assert why in err.value.message and err.value.stage == "PREFLIGHT"


def test_check_declared_normalises_and_sorts() -> None:
    assert apply.check_declared(["b/./c.py", "a.py", "a.py"], "p") == ["a.py", "b/c.py"]


def test_kind_of_names_the_three_kinds_and_refuses_others() -> None:
    assert [apply.kind_of(p) for p in ("x.py", "x.diff", "x.PATCH", "x.zip")] == [
        "script",
        "diff",
        "diff",
        "zip",
    ]
    with pytest.raises(PatchgateError, match="unknown kind"):
        apply.kind_of("x.txt")


# --- command-line variables ---------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("off", False)])
def test_boolean_variables_take_the_usual_words(raw: str, value: bool) -> None:
    assert config.parse_variable("keep_going", raw) is value


@pytest.mark.parametrize(
    ("key", "raw", "said"),
    [
        ("keep_going", "maybe", "not a yes/no value"),
        ("jail", "docker", "not one of bwrap, none"),
        ("strip", "x", "whole number"),
    ],
)
def test_bad_variable_values_are_refused_with_what_is_allowed(
    key: str, raw: str, said: str
) -> None:
    with pytest.raises(PatchgateError) as err:
        config.parse_variable(key, raw)
    assert said in err.value.message and err.value.stage == "PREFLIGHT"


def test_unknown_variable_is_refused_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(PatchgateError) as err:
        config.load(str(tmp_path), {"pach": "x.py"})
    assert "unknown variable pach=" in err.value.message and "patch" in err.value.message


# --- the live guard: which status entries a landing explains -------------------------------------


def test_status_entries_skip_the_landed_paths_and_renames() -> None:
    status = " M a.py\0?? b.txt\0R  new.py\0old.py\0"
    assert liveguard.status_entries(status, {"a.py"}) == ["?? b.txt", "R  new.py"]
    assert liveguard.status_entries(status, {"old.py"}) == [" M a.py", "?? b.txt"]


# --- rollback's plan as the operator reads it ----------------------------------------------------


def plan(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sha": "a" * 40,
        "head": "b" * 40,
        "branch": "main",
        "subject": "calc: mul",
        "patch_id": "add_mul@123456789abc",
        "rollback_id": None,
        "trailer_files": ["calc/ops.py"],
        "original": None,
        "reverted_by": [],
        "later": [],
        "conflicts": [],
        "files": ["calc/ops.py"],
        "stat": [" calc/ops.py | 2 --"],
        "issue": "rollback-aaaaaaaaaaaa",
        "revert_subject": 'Revert "calc: mul"',
        "token": "0123456789ab",
    }
    base.update(extra)
    return base


def test_plan_ends_with_the_exact_confirm_line() -> None:
    lines = revertplan.plan_lines(plan())
    assert lines[-1] == (
        f'CONFIRM: doit rollback sha={"a" * 40} confirm=0123456789ab operator=NAME reason="…"'
    )
    assert any("patch add_mul@123456789abc" in line for line in lines)


def test_plan_of_a_foreign_commit_says_so_and_a_conflict_has_no_token() -> None:
    lines = revertplan.plan_lines(plan(patch_id=None, conflicts=["x.py"], detail="error: x"))
    assert any("NOT a patchgate commit" in line for line in lines)
    assert not any(line.startswith("CONFIRM:") for line in lines)
    with pytest.raises(PatchgateError, match=r"conflicts with later commits in x\.py"):
        rollback.check_revertible(plan(conflicts=["x.py"], detail="error: x"))


def test_revert_of_a_revert_is_a_reapply() -> None:
    assert revertplan.revert_subject("fix") == 'Revert "fix"'
    assert revertplan.revert_subject('Revert "fix"') == 'Reapply "fix"'


def test_conflicting_files_reads_gits_complaints() -> None:
    output = "error: patch failed: a.py:3\nerror: b.py: does not match index\nU c.py\nok\n"
    assert revertplan.conflicting_files(output) == ["a.py", "b.py", "c.py"]


def test_token_binds_head_commit_and_diff() -> None:
    token = revertplan.token_of("h", "s", b"d")
    assert len(token) == 12
    assert token not in {
        revertplan.token_of("H", "s", b"d"),
        revertplan.token_of("h", "S", b"d"),
        revertplan.token_of("h", "s", b"D"),
    }


# --- the summary block and secrets --------------------------------------------------------------


def test_summary_lines_are_ordered_and_one_line_each() -> None:
    lines = report.summary_lines(
        {"LOG": "l", "NOTE": "n", "FILES": "x\nRESULT: FAIL", "RESULT": "SUCCESS"}
    )
    assert lines == ["RESULT: SUCCESS", "FILES: x\\nRESULT: FAIL", "NOTE: n", "LOG: l"]


def test_redact_hides_url_credentials_it_has_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("PATCHGATE_PUSH_TOKEN", raising=False)
    redact.remember_url_secrets("https://bot:hunter2hunter2@forge/x.git")
    assert redact.redact("said hunter2hunter2 at https://a:b@h/") == "said *** at https://***@h/"


# --- the landing pipeline's shape ----------------------------------------------------------------


def finish_nothing(ws_dir: str, ctx: landing.LandingContext, log: str) -> dict[str, Any]:
    return {"summary": {"RESULT": "SUCCESS", "COMMIT": "c", "PUSH": "SKIPPED"}}


def land_nothing(ws_dir: str, ctx: landing.LandingContext, log: str) -> None:
    return None


KIND = landing.LandingKind(name="demo", land=land_nothing, finish=finish_nothing, land_stage="X")


def context(tmp_path: Path) -> landing.LandingContext:
    cfg = config.load(str(tmp_path), {})
    return landing.context(cfg, "demo", "i1", "main", str(tmp_path / "state"), "doit demo")


def test_a_landing_chain_lands_pushes_and_finishes_in_that_order(tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path), "i1")
    ctx = context(tmp_path)
    tasks = list(
        landing.chain(KIND, ctx, ws, group="g", log="l", resume=False, land_deps=["verify:i1"])
    )
    assert [t["name"] for t in tasks] == ["i1-land", "i1-push", "i1-finish"]
    assert tasks[0]["task_dep"] == ["verify:i1"] and tasks[0]["targets"] == [ctx.land_file]
    assert tasks[1]["task_dep"] == ["demo:i1-land"] and tasks[2]["task_dep"] == ["demo:i1-push"]


def test_a_resumed_landing_only_pushes_and_finishes(tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path), "i1")
    tasks = list(landing.chain(KIND, context(tmp_path), ws, group="g", log="l", resume=True))
    assert [t["name"] for t in tasks] == ["i1-push", "i1-finish"]
    assert tasks[0]["task_dep"] == []


def test_a_live_gate_must_be_a_configured_checking_gate(tmp_path: Path) -> None:
    (tmp_path / "patchgate.yaml").write_text("live_gates: [nope]\n")
    with pytest.raises(PatchgateError, match="not a configured gate"):
        context(tmp_path)


def _refuse_setup() -> dict[str, Any]:
    raise PatchgateError("PREFLIGHT", "busy; wait")


def _setup_done(value: str) -> dict[str, Any]:
    return {"value": value}


def test_a_setup_task_hands_its_outcome_only_to_its_own_run(tmp_path: Path) -> None:
    """prepare: nothing prepared (doit list, help) is None; a refusal is recorded, not raised;
    a record another run (same pid, another nonce) left is never read."""
    root, pid = str(tmp_path), os.getpid()
    assert prepare.outcome(root, "promote") is None
    prepare.run("promote", root, pid, prepare.RUN, _setup_done, "x")
    assert prepare.outcome(root, "promote") == {"value": "x", "run": prepare.RUN}
    prepare.run("promote", root, pid, prepare.RUN, _refuse_setup)
    done = prepare.outcome(root, "promote")
    assert done is not None
    err = prepare.error_of(done)
    assert err is not None and (err.stage, err.message) == ("PREFLIGHT", "busy; wait")
    prepare.run("promote", root, pid, "an earlier run", _setup_done, "y")
    assert prepare.outcome(root, "promote") is None


def test_a_setup_task_in_a_worker_process_hands_its_outcome_over_in_a_file(
    tmp_path: Path,
) -> None:
    """doit -P process runs the setup task in a worker: the record file of doit's process."""
    root, pid = str(tmp_path), os.getpid()
    assert prepare.outcome(root, "rollback") is None
    child = os.fork()
    if child == 0:  # the worker
        try:
            prepare.run("rollback", root, pid, prepare.RUN, _setup_done, "z")
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert os.path.exists(prepare.record_path(root, "rollback", pid))
    assert prepare.outcome(root, "rollback") == {"value": "z", "run": prepare.RUN}


# --- typed records: the gate and the settings, built once from the configuration ----------------


def test_a_gate_record_fills_the_defaults_and_gives_back_the_same_json(tmp_path: Path) -> None:
    (tmp_path / "patchgate.yaml").write_text(
        "gate_timeout: 50\nbuild_command: make\n"
        "gates: [{name: lint, command: [ruff, '{files}'], env: {A: b}}]\n"
    )
    lint, build = config.effective_gates(config.load(str(tmp_path), {}))
    assert lint == config.Gate("lint", ("ruff", "{files}"), timeout=50, env={"A": "b"})
    # The digests of the up-to-date check and of the baseline cache hash this very dict.
    assert lint.to_json() == {
        "name": "lint",
        "command": ["ruff", "{files}"],
        "files": ["*"],
        "fixes": False,
        "junit": False,
        "build": False,
        "env": {"A": "b"},
        "timeout": 50,
    }
    assert build.to_json()["atlas"] == "build" and build.build
    for gate in (lint, build):
        assert config.Gate.from_json(gate.to_json(), 1) == gate
        assert pickle.loads(pickle.dumps(gate)) == gate  # doit -P process


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"command": ["x"]}, "a gate has no name"),
        ({"name": "g", "command": ["x"], "shell": True}, "unknown key 'shell'"),
        ({"name": "g"}, "command must be a non-empty list of strings"),
        ({"name": "g", "command": []}, "command must be a non-empty list of strings"),
        ({"name": "g", "command": "make"}, "command must be a non-empty list of strings"),
        ({"name": "g", "command": ["x"], "files": "*.py"}, "files must be a list of strings"),
        ({"name": "g", "command": ["x"], "timeout": 0}, "timeout must be a number above 0"),
        ({"name": "g", "command": ["x"], "timeout": True}, "timeout must be a number above 0"),
        ({"name": "g", "command": ["x"], "env": {"A": 1}}, "env must map names to strings"),
        ({"name": "g", "command": ["x"], "fixes": "yes"}, "fixes must be true or false"),
        ({"name": "g", "command": ["x"], "atlas": "lint"}, "atlas must be build or test"),
    ],
)
def test_a_bad_gate_is_one_config_error_naming_it(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(PatchgateError) as err:
        config.Gate.from_json(raw, 600)
    assert err.value.stage == "CONFIG" and problem in err.value.message
    assert "\n" not in err.value.message


def test_settings_are_the_configured_values_with_the_tool_envs_folder(tmp_path: Path) -> None:
    (tmp_path / "patchgate.yaml").write_text("jail_binds: [/opt/tc]\npatch_timeout: 9\n")
    cfg = config.load(str(tmp_path), {"strip": "1"})
    got = Settings.from_config(cfg)
    assert (got.jail_binds, got.patch_timeout, got.strip) == (("/opt/tc",), 9, 1)
    assert got.tool_env == os.path.dirname(cfg.tool_bin)
    data = got.to_json()
    assert data["jail_binds"] == ["/opt/tc"] and data["tool_env"] == got.tool_env
    assert set(data) == {*SETTINGS_RULES, *(f.name for f in dataclasses.fields(got))}
    assert pickle.loads(pickle.dumps(got)) == got


def test_a_steps_jail_comes_from_the_settings(tmp_path: Path) -> None:
    (tmp_path / "patchgate.yaml").write_text("jail_binds: [/opt/tc]\nmax_processes: 64\n")
    got = settings_of(config.load(str(tmp_path), {}))
    spec = jail_spec(got, "/w/repo", ("/p.diff",), writable=("/w/cache",), hidden=("/h",))
    assert spec == JailSpec(
        mode=got.jail,
        workdir="/w/repo",
        extra_writable=("/w/cache",),
        readonly=(got.tool_env, "/opt/tc", "/p.diff"),
        uid=got.jail_uid,
        max_processes=64,
        max_memory_mb=got.max_memory_mb,
        hidden=("/h",),
    )
    env = step_env(got, {"COVERAGE_FILE": "/c"})
    assert env["PATH"].startswith(f"{got.tool_env}/bin:") and env["COVERAGE_FILE"] == "/c"
    assert env["HOME"] == "/tmp" and env["PYTHONDONTWRITEBYTECODE"] == "1"


# --- typed records: meta.json and result.json, validated where they are read ---------------------


def meta_json() -> dict[str, Any]:
    return {
        "issue": "i1",
        "live_repo": "/live",
        "base_sha": "a" * 40,
        "base_tree": "b" * 40,
        "attempt": 2,
        "patch": "/p/patches/x.py",
        "patch_sha256": "c" * 64,
        "created": "2026-01-01T00:00:00+00:00",
    }


def result_json() -> dict[str, Any]:
    return {
        "patch_id": "i1@cccccccccccc",
        "issue": "i1",
        "patch": "/p/patches/x.py",
        "base_sha": "a" * 40,
        "patch_sha256": "c" * 64,
        "build_status": "not_run",
        "test_results": [],
        "gates": {"ruff": {"verdict": "pass", "reason": "", "exit_code": 0}},
        "verification_status": "pass",
        "stage": None,
        "reason": None,
        "tree": "d" * 40,
        "files": ["x.py"],
        "changes": [{"path": "x.py", "status": "M", "mode": "100644", "blob": "e" * 40}],
        "summary": {"RESULT": "SUCCESS", "FILES": "x.py"},
    }


@pytest.mark.parametrize("message", [None, "calc: add mul"])
def test_meta_round_trips_to_the_same_json(message: str | None) -> None:
    data = meta_json() | ({"message": message} if message else {})
    meta = Meta.from_json(data)
    assert (meta.base_sha, meta.attempt, meta.message) == ("a" * 40, 2, message)
    assert meta.to_json() == data  # no "message": null when there is none
    assert pickle.loads(pickle.dumps(meta)) == meta


def test_result_round_trips_to_the_same_json() -> None:
    result = Result.from_json(result_json())
    assert result.to_json() == result_json()
    worker = dataclasses.replace(result, verified_by={"executor": "dask", "worker": "w"})
    assert worker.to_json() == result_json() | {"verified_by": {"executor": "dask", "worker": "w"}}
    assert "patch" not in dataclasses.replace(result, patch=None).to_json()
    assert pickle.loads(pickle.dumps(result)) == result


@pytest.mark.parametrize(
    ("record", "change", "where"),
    [
        (Meta, {"base_sha": "HEAD"}, "base_sha"),
        (Meta, {"attempt": 0}, "attempt"),
        (Meta, {"patch": None}, "patch"),
        (Result, {"verification_status": "maybe"}, "verification_status"),
        (Result, {"gates": {"ruff": {}}}, "gates.ruff"),
        (Result, {"tree": "short"}, "tree"),
    ],
)
def test_a_bad_meta_or_result_is_one_error_naming_the_key(
    record: type[Meta] | type[Result], change: dict[str, Any], where: str
) -> None:
    data = (meta_json() if record is Meta else result_json()) | change
    with pytest.raises(PatchgateError) as err:
        record.from_json(data)
    assert err.value.stage == ("WORKSPACE" if record is Meta else "VERIFY")
    assert f"meta.json: {where}:" in err.value.message or f"result.json: {where}:" in (
        err.value.message
    )
    assert err.value.message.endswith("; verify the patch again to rewrite it")


def test_a_missing_key_of_meta_is_refused() -> None:
    data = meta_json()
    del data["base_tree"]
    with pytest.raises(PatchgateError, match="base_tree"):
        Meta.from_json(data)


def _lock_is_free(root: str) -> bool:
    """Whether another process could take the promotion lock now (a flock of its own)."""
    fd = os.open(lock.lock_path(root), os.O_RDWR)
    try:
        return lock._try_flock(fd)
    finally:
        os.close(fd)


def test_a_worker_s_promotion_lock_lasts_until_doit_s_own_process_exits(tmp_path: Path) -> None:
    """doit -P process: _promote takes the lock in a worker, and that worker may end before the
    landing's last step does; the lock is held until doit's own process (here: this one) exits."""
    root = str(tmp_path)
    os.makedirs(tmp_path / "patches" / ".state")
    Path(lock.lock_path(root)).touch()  # an earlier run made it
    lock.share(root)  # doit's own process, while loading
    try:
        child = os.fork()
        if child == 0:  # the worker that runs _promote, then ends
            try:
                lock._hold(root, lock.lock_path(root), "doit promote", "7", lambda: "busy; wait")
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        assert not _lock_is_free(root)
        assert lock.holder(root)["issue"] == "7"
    finally:
        os.close(lock._shared.pop(lock.lock_path(root)))
    assert _lock_is_free(root)  # doit's process ended: released
