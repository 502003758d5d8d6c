"""executor=dask (issue 17): a Dask cluster verifies, the live host alone promotes.

Real clusters on 127.0.0.1: an in-process LocalCluster (2 worker processes) and separate
``dask scheduler`` / ``dask worker`` processes, both session fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ADD_MUL, Project, ProjectFactory, Result, git, run_env, script
from doitcmd import doit_argv
from patchgate import cluster, seal

pytest.importorskip("distributed")

GATES = [
    {
        "name": "ruff-format",
        "command": ["ruff", "format", "--no-cache", "{files}"],
        "files": ["*.py"],
        "fixes": True,
    },
    {"name": "ruff", "command": ["ruff", "check", "--no-cache", "{files}"], "files": ["*.py"]},
]
# mul is written unformatted (a*b): the fixing gate changes the tree, so the tree ids compared
# below include a fixer's work, not only the patch's.
MUL_UNFORMATTED = script(
    ["calc/ops.py"],
    'p = Path("calc/ops.py")\n'
    'p.write_text(p.read_text() + "\\n\\ndef mul(a: int, b: int) -> int:\\n    return a*b\\n")',
)
UNUSED_IMPORT = script(
    ["calc/ops.py"], 'p = Path("calc/ops.py")\np.write_text("import os\\n" + p.read_text())'
)
UNDECLARED = script(["calc/ops.py"], 'Path("README.txt").write_text("changed\\n")')
SLOW_ADD = script(
    ["calc/ops.py"],
    'import time\n\ntime.sleep(4)\np = Path("calc/ops.py")\n'
    'p.write_text(p.read_text() + "\\n# slow\\n")',
)
BATCH = {"mul.py": MUL_UNFORMATTED, "unused.py": UNUSED_IMPORT, "undeclared.py": UNDECLARED}


@dataclass(frozen=True)
class Cluster:
    address: str
    worker_dir: Path


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real LocalCluster: 2 worker processes, one thread each, retries ours (no allowed
    failures), the worker cache in a folder of its own."""
    import dask
    from distributed import LocalCluster

    folder = tmp_path_factory.mktemp("local-workers")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        lc = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            # The workers' doit runs keep compiled bytecode, as run_env gives every test run.
            env={
                cluster.WORKER_DIR_ENV: str(folder),
                "PYTHONDONTWRITEBYTECODE": "",
                "PYTHONPYCACHEPREFIX": run_env()["PYTHONPYCACHEPREFIX"],
            },
        )
    try:
        yield Cluster(lc.scheduler_address, folder)
    finally:
        lc.close()


@pytest.fixture(scope="module")
def process_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``dask scheduler`` and two ``dask worker`` processes, as on separate machines."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("process-workers")
    dask_cli = os.path.join(os.path.dirname(sys.executable), "dask")
    sched_file = folder / "scheduler.json"
    env = run_env(
        {
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
            cluster.WORKER_DIR_ENV: str(folder / "cache"),
        }
    )
    common = ("--scheduler-file", str(sched_file), "--no-dashboard")
    procs = [
        subprocess.Popen(
            (dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", *common),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(2):
            argv = (dask_cli, "worker", "--nthreads", "1", "--host", "127.0.0.1")
            procs.append(
                subprocess.Popen(
                    argv + common, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        address = json.loads(sched_file.read_text())["address"]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield Cluster(address, folder / "cache")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def results(project: Project, issues: list[str]) -> dict[str, tuple[str, str | None, str | None]]:
    out = {}
    for issue in issues:
        data = json.loads((project.ws(issue) / "result.json").read_text())
        out[issue] = (data["verification_status"], data["stage"], data["tree"])
    return out


def blocks(out: str) -> list[tuple[str, ...]]:
    """Each summary block's RESULT/STAGE/REASON/FILES lines (not LOG: another run's file)."""
    chunks = out.split("\nRESULT: ")[1:]  # the blocks come last, one after the other
    keys = ("RESULT", "STAGE", "REASON", "FILES")
    return sorted(
        tuple(ln for ln in ("RESULT: " + chunk).splitlines() if ln.startswith(keys))
        for chunk in chunks
    )


def events(project: Project) -> list[dict[str, object]]:
    lines = (project.path / "audit" / "provenance.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def batch_project(base: Path, template: Path, name: str) -> Project:
    path = base / name
    shutil.copytree(template, path / "live", symlinks=True)
    project = Project(path, path / "live")
    project.configure(live_repo="live", gates=GATES)
    for file, text in BATCH.items():
        project.patch(file, text)
    return project


@pytest.fixture(scope="module")
def local_batch(
    tmp_path_factory: pytest.TempPathFactory, calc_template: Path
) -> tuple[Project, Result]:
    """The batch verified locally once: what every cluster run is compared with."""
    local = batch_project(tmp_path_factory.mktemp("batch"), calc_template, "local")
    return local, local.run("verify", "patch=patches/*.py")


@pytest.mark.parametrize("which", ["local_cluster", "process_cluster"])
def test_cluster_batch_gives_the_local_verdicts_and_trees(
    which: str,
    request: pytest.FixtureRequest,
    local_batch: tuple[Project, Result],
    tmp_path: Path,
    calc_template: Path,
) -> None:
    where: Cluster = request.getfixturevalue(which)
    local, here = local_batch
    remote = batch_project(tmp_path, calc_template, "remote")
    there = remote.run(
        "verify", "patch=patches/*.py", "executor=dask", f"scheduler={where.address}"
    )
    issues = ["mul", "undeclared", "unused"]
    assert results(remote, issues) == results(local, issues), there.out
    assert results(remote, issues)["mul"][0] == "pass"
    assert results(remote, issues)["unused"][1] == "GATES"
    assert results(remote, issues)["undeclared"][1] == "SCOPE"
    assert there.code == here.code != 0
    assert blocks(there.out) == blocks(here.out)  # the same summary blocks, in any order
    assert "1 passed, 2 failed" in there.out
    # The workspace holds the worker's records, as after a local run (but the worktree).
    ws = remote.ws("mul")
    for rel in (
        "meta.json",
        "steps/apply.json",
        "steps/scope.json",
        "gates/ruff.json",
        "patched.zip",
    ):
        assert (ws / rel).exists(), rel
    result = json.loads((ws / "result.json").read_text())
    assert result["verified_by"]["executor"] == "dask"
    assert result["verified_by"]["worker"].startswith("tcp://127.0.0.1:")
    assert result["patch"] == str(remote.path / "patches" / "mul.py")
    verify_events = [e for e in events(remote) if str(e["event"]).startswith("verify_")]
    assert len(verify_events) == 3
    assert all(e["verified_by"]["executor"] == "dask" for e in verify_events)  # type: ignore[index]
    (mul_log,) = (remote.path / "patches" / "logs").glob("*_issue_mul.log")
    assert "gate ruff-format: fixed calc/ops.py" in mul_log.read_text()  # the worker's log
    status = remote.run("status")
    assert "mul                      pass   base" in status.out
    assert "current" in status.out and "damaged" not in status.out
    # The bundle of the base was made once, and named by its content.
    bundles = list((remote.path / "patches" / ".state" / "bundles").glob("*.bundle"))
    assert len(bundles) == 1 and len(bundles[0].stem) == 64


def test_rerun_is_up_to_date_and_promote_lands_the_verified_tree(
    make_project: ProjectFactory, local_cluster: Cluster
) -> None:
    project = make_project(gates=GATES, executor="dask", scheduler=local_cluster.address)
    patch = project.patch("mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    again = project.run("verify", f"patch={patch}")
    assert again.code == 0 and "-- verify:mul-archive" in again.out
    tree = json.loads((project.ws("mul") / "result.json").read_text())["tree"]
    # promote works unchanged; the executor stays dask for this workspace even unset.
    cfg = project.config()
    del cfg["executor"]
    (project.path / "patchgate.yaml").write_text(json.dumps(cfg))
    landed = project.run("promote", "issue=mul")
    assert landed.code == 0, landed.out
    assert git(project.live, "rev-parse", "HEAD^{tree}") == tree
    log = (project.path / landed.summary["LOG"]).read_text()
    assert "equal to the worker's" in log


def test_tampered_result_is_refused_at_promote(
    make_project: ProjectFactory, local_cluster: Cluster
) -> None:
    project = make_project(gates=GATES, executor="dask", scheduler=local_cluster.address)
    patch = project.patch("mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    path = project.ws("mul") / "result.json"
    result = json.loads(path.read_text())
    result["tree"] = git(project.live, "rev-parse", "HEAD^{tree}")  # a tree that exists, not it
    path.write_text(json.dumps(result))
    before = project.state()
    res = project.run("promote", "issue=mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "PROMOTE"
    # The host sealed what it wrote (issue 12): an edit after that is refused first.
    assert "is not the one verify wrote" in res.summary["REASON"]
    assert project.state() == before
    # A worker that sent a wrong tree, sealed as the host writes what it receives: the host's
    # own recomputation refuses it (a tree its step records do not lead to, or that base and
    # patch do not give here).
    seal.seal(str(project.path), str(path))
    res = project.run("promote", "issue=mul")
    assert res.code != 0 and res.summary["STAGE"] == "PROMOTE"
    assert "but its steps verified" in res.summary["REASON"] or (
        "is not the tree base and patch give here" in res.summary["REASON"]
    )
    assert project.state() == before


def test_duplicate_submission_runs_once(
    make_project: ProjectFactory, local_cluster: Cluster
) -> None:
    from distributed import Client, get_task_stream
    from patchgate import config

    project = make_project(gates=GATES)
    patch = project.patch("mul.py", ADD_MUL)
    cfg = config.load(str(project.path), {})
    base = git(project.live, "rev-parse", "HEAD")
    path, sha = cluster.bundle_for(str(project.path), str(project.live), base)
    settings = cluster.worker_settings(cfg)
    tool = cluster.toolchain_id(settings["tool_env"])
    patch_sha = cluster.sha256_file(str(project.path / patch))
    key = cluster.job_key(base, patch_sha, settings, tool, "mul")
    task = cluster.WorkerTask(
        key, "mul", "mul.py", (project.path / patch).read_bytes(), base, sha, settings, tool, 600
    )
    cluster._bundle_bytes[sha] = Path(path).read_bytes()
    with Client(local_cluster.address, set_as_default=False) as client:
        with get_task_stream(client) as stream:
            first = cluster.submit(client, task, "", with_bundle=True)
            second = cluster.submit(client, task, "", with_bundle=True)
            assert first.key == second.key
            one, two = first.result(timeout=300), second.result(timeout=300)
        assert one.status == two.status == "done"
        runs = [t for t in stream.data if "patchgate-verify" in str(t["key"])]
        assert len(runs) == 1
        # A second submission of the same inputs gets the same key: the key is the inputs'.
        assert cluster.job_key(base, patch_sha, settings, tool, "mul") == key
        assert cluster.job_key(base, patch_sha, {**settings, "all_gates": True}, tool, "mul") != key
        # The worker kept the bundle: the cheap check says so, nothing is sent again.
        assert any(client.run(cluster.has_bundle, sha).values())


def test_worker_without_bubblewrap_refuses(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from patchgate import config

    project = make_project()
    patch = project.patch("mul.py", ADD_MUL)
    cfg = config.load(str(project.path), {})
    base = git(project.live, "rev-parse", "HEAD")
    path, sha = cluster.bundle_for(str(project.path), str(project.live), base)
    settings = cluster.worker_settings(cfg)
    tool = cluster.toolchain_id(settings["tool_env"])
    task = cluster.WorkerTask("0" * 64, "mul", "mul.py", b"", base, sha, settings, tool, 60)
    monkeypatch.setenv(cluster.WORKER_DIR_ENV, str(tmp_path / "cache"))
    assert cluster.verify_job(task, None).status == "need_bundle"
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this worker
    refused = cluster.verify_job(task, Path(path).read_bytes())
    assert refused.status == "refused" and "bubblewrap" in refused.reason
    other = cluster.WorkerTask("0" * 64, "mul", "mul.py", b"", base, sha, settings, "f" * 64, 60)
    monkeypatch.setenv("PATH", os.environ.get("PATH", "") + ":/usr/bin:/bin")
    assert "differs from the host's" in cluster.verify_job(other, None).reason
    assert patch


def test_bad_executor_and_scheduler_values_are_one_line(project: Project) -> None:
    patch = project.patch("mul.py", ADD_MUL)
    res = project.run("verify", f"patch={patch}", "executor=ray")
    assert res.code != 0 and res.summary["STAGE"] == "PREFLIGHT"
    assert "executor=ray is not one of local, dask" in res.summary["REASON"]
    res = project.run("verify", f"patch={patch}", "executor=dask", "scheduler=localhost:8786")
    assert res.code != 0 and res.summary["STAGE"] == "PREFLIGHT"
    assert "not a Dask scheduler address" in res.summary["REASON"]
    assert "Traceback" not in res.out


def test_unreachable_scheduler_is_one_line(project: Project) -> None:
    patch = project.patch("mul.py", ADD_MUL)
    res = project.run(
        "verify",
        f"patch={patch}",
        "executor=dask",
        "scheduler=tcp://127.0.0.1:9",
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},
    )
    assert res.code != 0 and res.summary["STAGE"] == "PREFLIGHT", res.out
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in res.summary["REASON"]


def test_worker_killed_mid_task_is_retried_on_another(
    make_project: ProjectFactory, process_cluster: Cluster
) -> None:
    project = make_project(gates=GATES, executor="dask", scheduler=process_cluster.address)
    patch = project.patch("slow.py", SLOW_ADD)
    run = subprocess.Popen(
        doit_argv(project.path, "verify", f"patch={patch}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env(),
    )
    projects = process_cluster.worker_dir / "projects"
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        pids = list(projects.glob("*/worker.pid")) if projects.exists() else []
        if pids:
            victim = int(pids[0].read_text())
        else:
            time.sleep(0.05)
    assert victim is not None, "the task never started on a worker"
    os.kill(victim, signal.SIGKILL)
    out, _ = run.communicate(timeout=300)
    log_line = next(ln for ln in out.splitlines() if ln.startswith("LOG: "))
    log = (project.path / log_line.removeprefix("LOG: ")).read_text()
    assert "the worker running it died" in log and "retrying once" in log, out
    result = json.loads((project.ws("slow") / "result.json").read_text())
    # Either the retry passed on the other worker, or the patch (only it) failed at WORKER.
    assert result["verification_status"] == "pass" or result["stage"] == "WORKER", out
    if result["verification_status"] == "pass":
        assert "RESULT: SUCCESS" in out


def a_job(project: Project) -> cluster.Job:
    base = git(project.live, "rev-parse", "HEAD")
    patch = project.path / project.patch("mul.py", ADD_MUL)
    return cluster.Job(
        key="0" * 64,
        issue="mul",
        patch=str(patch),
        patch_sha256=cluster.sha256_file(str(patch)),
        base=base,
        settings={},
        toolchain="",
        root=str(project.path),
        live=str(project.live),
        log=str(project.path / "patches" / "logs" / "x_issue_mul.log"),
        scheduler=None,
        timeout=60,
    )


def test_a_worker_failure_fails_only_its_patch_at_worker(project: Project) -> None:
    job = a_job(project)
    died = cluster.Outcome("refused", "tcp://10.0.0.9:4000", "the worker running it died")
    with pytest.raises(cluster.PatchgateError) as err:
        cluster.land_records(str(project.ws("mul")), job, died)
    assert err.value.stage == "WORKER" and "after one retry" in err.value.message
    result = json.loads((project.ws("mul") / "result.json").read_text())
    assert result["summary"]["STAGE"] == "WORKER"
    assert result["verified_by"]["worker"] == "tcp://10.0.0.9:4000"
    event = events(project)[-1]
    assert event["event"] == "verify_fail" and event["stage"] == "WORKER"
    assert event["verified_by"] == {"executor": "dask", "worker": "tcp://10.0.0.9:4000"}


def test_carrying_a_cluster_verified_tree_is_refused(
    make_project: ProjectFactory, local_cluster: Cluster
) -> None:
    project = make_project(executor="dask", scheduler=local_cluster.address)
    patch = project.patch("mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    ops = project.live / "calc" / "ops.py"
    ops.write_text(ops.read_text() + "\n# live moved\n")
    git(project.live, "commit", "-qam", "live moved")
    before = project.state()
    res = project.run("promote", "issue=mul", "live_changed=overwrite_live")
    assert res.code != 0 and res.summary["STAGE"] == "PROMOTE", res.out
    assert "use live_changed=rebase" in res.summary["REASON"]
    assert project.state() == before


def test_a_worker_writes_nothing_outside_the_workspace_records(project: Project) -> None:
    job = a_job(project)
    sent = {"result.json": b"{}", "../../../planted.json": b"{}"}
    evil = cluster.Outcome("done", "tcp://10.0.0.9:4000", files=sent)
    with pytest.raises(cluster.PatchgateError) as err:
        cluster.land_records(str(project.ws("mul")), job, evil)
    assert err.value.stage == "WORKER" and "outside its records" in err.value.message
    assert not (project.path / "planted.json").exists()
    assert not (project.path.parent / "planted.json").exists()


def test_without_dask_distributed_the_run_says_what_to_install(
    project: Project, tmp_path: Path
) -> None:
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    patch = project.patch("mul.py", ADD_MUL)
    res = project.run(
        "verify", f"patch={patch}", "executor=dask", env={"PYTHONPATH": str(shadow.parent)}
    )
    assert res.code != 0 and res.summary["STAGE"] == "PREFLIGHT", res.out
    assert "pip install 'patchgate[cluster]'" in res.summary["REASON"]


def test_the_bundle_goes_along_only_while_a_worker_lacks_it() -> None:
    both = {"tcp://a:1", "tcp://b:1"}
    assert cluster.carry_bundle(both, set(), 0) and cluster.carry_bundle(both, set(), 1)
    assert not cluster.carry_bundle(both, set(), 2)  # two copies for two workers
    assert cluster.carry_bundle(both, {"tcp://a:1"}, 0)
    assert not cluster.carry_bundle(both, both, 0)  # every worker has it: never sent again
