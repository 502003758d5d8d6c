"""executor: dask — verification on a Dask cluster; the live host alone promotes (issue 17).

The one module that talks to Dask. Verification is a function of (base commit, patch bytes,
gate configuration, toolchain): the coordinator (the host's ``doit verify``) ships exactly
those to a worker, the worker runs patchgate's own verify chain on a clone of the base in a
subprocess, with the same jail, gates, timeouts and environment pinning, and sends back the
workspace records; the host writes them into ``patches/workspaces/issue_ID/`` so ``doit
status`` and ``doit promote issue=ID`` work as after a local run.

* The repository travels as a ``git bundle`` of the base, made once per base commit and named
  by its sha256 (``patches/.state/bundles/``). A cheap check asks the workers which of them hold
  it; while some do not, it goes with the task (as many copies as workers lack it; a task that
  lands on a worker without it comes back at once and is sent again with it). It is never
  scattered: data scattered to a worker dies with it (dask/distributed#3149). A worker keeps it
  on disk, keyed by that sha256 (``PATCHGATE_WORKER_DIR``, default
  ``$TMPDIR/patchgate-worker-UID``), with a bare mirror per base commit.
* A task's key is the sha256 of its inputs, so the same patch submitted twice runs once.
* A worker that dies, refuses (no bubblewrap, another toolchain) or crashes fails only its
  patch, ``STAGE: WORKER``, after one retry on another worker; retries are bounded here, not
  left to the scheduler (its ``allowed-failures`` is 0 for the embedded cluster).
* Trust stays on the host: ``recheck`` (promote's preflight) recomputes the tree of a
  workspace verified elsewhere from base and patch and refuses a mismatch.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from doit.tools import config_changed

from . import config, git, jail, lock, proc, report
from .errors import PatchgateError
from .steps import read_json, sha256_file, step, write_json
from .workspace import META_SCHEMA, Meta, Result, Workspace, forget_tree

EXECUTORS = ("local", "dask")
BUNDLES_DIR = os.path.join("patches", ".state", "bundles")
RECHECK_DIR = os.path.join("patches", ".state", "recheck")
WORKER_DIR_ENV = "PATCHGATE_WORKER_DIR"
SCHEDULER = re.compile(r"^(tcp|tls|inproc|ucx)://[^\s]+$")
# Workspace files a worker sends back (relative to issue_ID/), besides the log; the host
# writes nothing else.
RECORDS = ("meta.json", "result.json", "patched.zip", "steps/*.json", "gates/*.json")
RECORD_NAME = re.compile(
    r"^(meta\.json|result\.json|patched\.zip|(steps|gates)/[A-Za-z0-9_][A-Za-z0-9_.-]*\.json)$"
)
# The keys of the effective configuration a verification depends on: only these travel (no
# promotion setting, nothing secret), and only these are part of a task's key.
VERIFY_KEYS = (
    "jail",
    "jail_uid",
    "jail_binds",
    "tool_env",
    "patch_timeout",
    "gate_timeout",
    "git_timeout",
    "max_processes",
    "max_memory_mb",
    "output_cap_mb",
    "strip",
    "allow_undeclared",
    "allow_untouched",
    "allow_noop",
    "all_gates",
    "keep_going",
    "allow_gates_fail",
    "baseline",
    "gates",
    "build_command",
    "test_commands",
)


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One patch's verification as the host plans it (plain values: doit may pickle it)."""

    key: str  # sha256 of the inputs: base, patch bytes, configuration, toolchain, issue
    issue: str
    patch: str  # the host's patch file
    patch_sha256: str
    base: str
    settings: dict[str, Any]  # the worker's patchgate.yaml, but live_repo
    toolchain: str
    root: str
    live: str
    log: str
    scheduler: str | None
    timeout: float


@dataclass(frozen=True)
class WorkerTask:
    """What travels to a worker with each submission."""

    key: str
    issue: str
    patch_name: str
    patch_bytes: bytes
    base: str
    bundle_sha256: str
    settings: dict[str, Any]
    toolchain: str
    timeout: float


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back: ``done`` (records attached), ``need_bundle`` or ``refused``."""

    status: str
    worker: str
    reason: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    log: str = ""
    seconds: float = 0.0


# --- the task creator's side -----------------------------------------------------------------


def wanted(cfg: config.Config, ws: Workspace, carry: dict[str, Any] | None = None) -> bool:
    """Whether this issue verifies on the cluster.

    ``executor`` when it is set (patchgate.yaml or the command line); otherwise a workspace
    keeps the executor it was verified with, so ``doit promote issue=ID`` after ``doit verify
    ... executor=dask`` finds its verification current instead of redoing it locally.
    Carrying a verified tree onto a new base (live_changed=overwrite_*) is local work on that
    tree's objects, which a tree verified elsewhere does not have here.
    """
    if carry is not None:
        if verified_elsewhere(ws.result):
            raise PatchgateError(
                "PROMOTE",
                f"live changed since the base of issue {ws.issue}, which a cluster worker "
                f"verified; live_changed={cfg['live_changed']} carries a tree verified here "
                "only: use live_changed=rebase (verify the patch again on the new base)",
            )
        return False
    if cfg.sources.get("executor", "default") != "default":
        return bool(cfg["executor"] == "dask")
    return verified_elsewhere(ws.result)


def verified_elsewhere(result_path: str) -> bool:
    """Whether a workspace's result.json says a cluster worker verified it."""
    try:
        by = Result.from_json(read_json(result_path)).verified_by
    except (OSError, ValueError, PatchgateError):
        return False
    return by is not None and by.get("executor") == "dask"


def worker_settings(cfg: config.Config) -> dict[str, Any]:
    """The host's effective configuration as the worker's patchgate.yaml."""
    values = {k: cfg[k] for k in VERIFY_KEYS}
    values.update(live_repo="repo", remote=None, tool_env=os.path.dirname(cfg.tool_bin))
    values["jail_binds"] = [os.path.abspath(os.path.join(cfg.root, p)) for p in cfg["jail_binds"]]
    return values


def toolchain_id(tool_env: str) -> str:
    """What the gates run with: the tool environment's path, Python and installed packages."""
    lines = [os.path.abspath(tool_env)]
    with contextlib.suppress(OSError), open(os.path.join(tool_env, "pyvenv.cfg")) as fh:
        lines += sorted(ln.strip() for ln in fh if ln.startswith("version"))
    for site in sorted(glob.glob(os.path.join(tool_env, "lib", "python*", "site-packages"))):
        lines += sorted(n for n in os.listdir(site) if n.endswith(".dist-info"))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def job_key(
    base: str, patch_sha256: str, settings: dict[str, Any], toolchain: str, issue: str
) -> str:
    data = {
        "base": base,
        "patch": patch_sha256,
        "settings": settings,
        "toolchain": toolchain,
        "issue": issue,
    }
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def verify_timeout(cfg: config.Config) -> float:
    """How long one verification may take on a worker: every step's own timeout, plus git."""
    gates = config.effective_gates(cfg)
    return float(
        cfg["patch_timeout"] + sum(g.timeout for g in gates) + 4 * cfg["git_timeout"] + 120
    )


# Jobs planned by this doit process: the first cluster step to run submits them all, so the
# whole batch verifies at once although doit runs one step at a time. Every step's arguments
# hold this same list, complete by the time an action runs (creators finish first).
_planned: list[Job] = []


def cluster_step(
    cfg: config.Config,
    patch: str,
    issue: str,
    base: str,
    patch_sha: str,
    log: str,
    warning: str | None,
) -> dict[str, Any]:
    """The one step of an issue verified on the cluster (named like the local chain's last
    step, so promote plans it the same way)."""
    scheduler = cfg["scheduler"]
    if scheduler and not SCHEDULER.match(scheduler):
        raise PatchgateError(
            "PREFLIGHT",
            f"scheduler={scheduler} is not a Dask scheduler address; use tcp://HOST:8786, "
            "or leave it unset for an embedded LocalCluster",
        )
    ws = Workspace(cfg.root, issue)
    settings = worker_settings(cfg)
    toolchain = toolchain_id(settings["tool_env"])
    job = Job(
        key=job_key(base, patch_sha, settings, toolchain, issue),
        issue=issue,
        patch=patch,
        patch_sha256=patch_sha,
        base=base,
        settings=settings,
        toolchain=toolchain,
        root=cfg.root,
        live=cfg.live_repo,
        log=log,
        scheduler=scheduler or None,
        timeout=verify_timeout(cfg),
    )
    _planned.append(job)
    return step(
        f"issue_{issue}",
        f"{issue}-archive",
        verify_on_cluster,
        [ws.dir, job, _planned],
        root=cfg.root,
        log=log,
        stage="WORKER",
        doc="verify on the Dask cluster; the worker's records land in the workspace",
        warning=warning,
        summary=ws.result,
        file_dep=[patch],
        targets=[ws.result, ws.archive],
        uptodate=[config_changed({"cluster_key": job.key})],
    )


# --- the coordinator (host) ------------------------------------------------------------------

_client: Any = None
_cluster: Any = None
_scheduler: str | None = None
_futures: dict[str, Any] = {}  # job key -> (WorkerTask, Future) submitted, not yet landed
_settled: set[str] = set()  # job keys whose records this process has landed
_holders: dict[str, set[str]] = {}  # bundle sha256 -> workers known to hold it
_bundle_bytes: dict[str, bytes] = {}
_sent: dict[str, int] = {}  # bundle sha256 -> submissions that carried it


def client_for(scheduler: str | None) -> Any:
    """A Dask client: the scheduler at ``scheduler``, or an embedded LocalCluster."""
    global _client, _cluster, _scheduler
    if _client is not None and _scheduler == scheduler:
        return _client
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise PatchgateError(
            "PREFLIGHT",
            "executor=dask needs Dask distributed, which is not installed here; "
            "pip install 'patchgate[cluster]' (or dask[distributed]), or use executor=local",
        ) from None
    close_client()
    if scheduler:
        try:
            # Waits distributed.comm.timeouts.connect (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT).
            _client = Client(scheduler, set_as_default=False)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            raise PatchgateError(
                "PREFLIGHT",
                f"cannot reach the Dask scheduler at {scheduler} ({exc.__class__.__name__}); "
                "start it (dask scheduler) or fix scheduler: / scheduler=",
            ) from None
    else:
        # Retries are ours to bound: a worker's death ends its task at once (KilledWorker).
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            _cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=max(1, min(os.cpu_count() or 1, 4)),
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",  # no clash on 8787, not on the network
                silence_logs=40,
            )
        _client = Client(_cluster, set_as_default=False)  # type: ignore[no-untyped-call]
    _scheduler = scheduler
    atexit.register(close_client)
    return _client


def close_client() -> None:
    global _client, _cluster
    with contextlib.suppress(Exception):
        if _client is not None:
            _client.close()
    with contextlib.suppress(Exception):
        if _cluster is not None:
            _cluster.close()
    _client = _cluster = None
    _futures.clear()
    _settled.clear()
    _holders.clear()
    _sent.clear()


def bundle_for(root: str, live: str, base: str) -> tuple[str, str]:
    """(path, sha256) of the git bundle of ``base``: made once per base commit, then cached.

    Made from a bare shadow repository that borrows live's objects (alternates), so live
    gets no ref and no lock of ours.
    """
    folder = os.path.join(root, BUNDLES_DIR)
    index = os.path.join(folder, f"{base}.json")
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = read_json(index)
        path = os.path.join(folder, f"{known['sha256']}.bundle")
        if os.path.exists(path):
            return path, str(known["sha256"])
    os.makedirs(folder, exist_ok=True)
    shadow = tempfile.mkdtemp(prefix=".shadow-", dir=folder)
    try:
        tmp = os.path.join(shadow, "base.bundle")
        git.bundle_commit(live, shadow, base, "refs/patchgate/base", tmp, "WORKER")
        digest = sha256_file(tmp)
        path = os.path.join(folder, f"{digest}.bundle")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(shadow, ignore_errors=True)
    write_json(index, {"base": base, "sha256": digest, "bytes": os.path.getsize(path)})
    return path, digest


def up_to_date(job: Job) -> bool:
    """The workspace already holds this very job's records (doit will skip its step)."""
    ws = Workspace(job.root, job.issue)
    try:
        by = ws.read_result().verified_by or {}
    except (OSError, ValueError, PatchgateError):
        return False
    return by.get("key") == job.key and os.path.exists(ws.archive)


def worker_task(job: Job, bundle_sha: str) -> WorkerTask:
    with open(job.patch, "rb") as fh:
        data = fh.read()
    return WorkerTask(
        key=job.key,
        issue=job.issue,
        patch_name=os.path.basename(job.patch),
        patch_bytes=data,
        base=job.base,
        bundle_sha256=bundle_sha,
        settings=job.settings,
        toolchain=job.toolchain,
        timeout=job.timeout,
    )


def carry_bundle(workers: set[str], holders: set[str], sent: int) -> bool:
    """Whether the next task carries the bundle: while fewer copies went out than workers lack
    it. Not one per task: a task that still lands on a worker without it comes back at once
    (need_bundle) and is sent again with it; once every worker holds it, none is sent."""
    return sent < len(workers - holders)


def submit(
    client: Any,
    task: WorkerTask,
    attempt: str,
    *,
    with_bundle: bool | None = None,
    avoid: str | None = None,
) -> Any:
    """Submit ``task``; its dask key is its input key (plus the attempt), so a duplicate
    submission joins the one already there instead of running again."""
    sha = task.bundle_sha256
    workers = set(client.ncores())
    if with_bundle is None:
        with_bundle = carry_bundle(workers, _holders.get(sha, set()), _sent.get(sha, 0))
    if with_bundle:
        _sent[sha] = _sent.get(sha, 0) + 1
    data = _bundle_bytes[sha] if with_bundle else None
    others = sorted(workers - {avoid}) if avoid else []
    placement: dict[str, Any] = {"workers": others, "allow_other_workers": False} if others else {}
    return client.submit(
        verify_job,
        task,
        data,
        key=f"patchgate-verify-{task.key}{attempt}",
        pure=False,
        retries=0,
        **placement,
    )


def settle(client: Any, task: WorkerTask, future: Any, log: str) -> Outcome:
    """Wait for one submission; a missing bundle is sent along, a failure retried once."""
    from distributed import KilledWorker

    retried = False
    while True:
        try:
            outcome: Outcome = future.result(timeout=task.timeout + 60)
        except KilledWorker as exc:
            last = getattr(exc, "last_worker", None)
            worker = getattr(last, "address", "") or "unknown"
            outcome = Outcome("refused", worker, "the worker running it died")
        except Exception as exc:  # the task crashed on the worker, or outlived its timeout
            future.cancel()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            outcome = Outcome("refused", "unknown", f"{exc.__class__.__name__} {first}".strip())
        if outcome.status == "need_bundle":
            _holders.get(task.bundle_sha256, set()).discard(outcome.worker)
            report.log(log, f"cluster: {outcome.worker} lacks the bundle; sending it along")
            future = submit(client, task, "-b" + uuid.uuid4().hex[:8], with_bundle=True)
            continue
        _holders.setdefault(task.bundle_sha256, set()).add(outcome.worker)
        if outcome.status == "refused" and not retried:
            retried = True
            report.log(log, f"cluster: {outcome.worker} failed ({outcome.reason}); retrying once")
            future = submit(client, task, "-retry", avoid=outcome.worker)
            continue
        return outcome


def verify_on_cluster(ws_dir: str, job: Job, batch: Sequence[Job]) -> None:
    """Action of the cluster step: submit (with the rest of the batch), wait, land the records."""
    started = time.monotonic()
    client = client_for(job.scheduler)
    tasks: dict[str, WorkerTask] = {}
    for other in [job, *batch]:
        if other.key in _futures or other.key in _settled:
            continue
        if other is not job and up_to_date(other):
            continue
        path, sha = bundle_for(other.root, other.live, other.base)
        if sha not in _bundle_bytes:
            with open(path, "rb") as fh:
                _bundle_bytes[sha] = fh.read()
            try:
                has = client.run(has_bundle, sha)
            except Exception as exc:  # a worker going away meanwhile: send the bundle along
                report.log(job.log, f"cluster: could not ask the workers for the bundle: {exc}")
                has = {}
            _holders[sha] = {w for w, yes in has.items() if yes}
            report.log(
                job.log,
                f"cluster: bundle {sha[:12]} of base {other.base[:12]} "
                f"({len(_bundle_bytes[sha]) // 1024} KiB): {len(_holders[sha])} of "
                f"{len(has)} worker(s) hold it already",
            )
        tasks[other.key] = worker_task(other, sha)
        _futures[other.key] = (tasks[other.key], submit(client, tasks[other.key], ""))
    task, future = _futures[job.key]
    report.log(job.log, f"cluster: verifying on {job.scheduler or 'an embedded LocalCluster'}")
    outcome = settle(client, task, future, job.log)
    del _futures[job.key]  # the cluster may forget it: its records are about to land here
    _settled.add(job.key)
    waited = time.monotonic() - started
    report.log(
        job.log,
        f"cluster: {outcome.status} on {outcome.worker}: {outcome.seconds:.2f}s on the worker, "
        f"{waited:.2f}s waited here",
    )
    landing = time.monotonic()
    try:
        land_records(ws_dir, job, outcome)
    finally:
        report.log(job.log, f"cluster: records landed here in {time.monotonic() - landing:.3f}s")


def land_records(ws_dir: str, job: Job, outcome: Outcome) -> None:
    """The worker's records into the host's workspace; a failed verdict fails the step."""
    ws = Workspace.at(ws_dir)
    if ws.root != job.root:
        raise PatchgateError(
            "INTERNAL", f"workspace {ws_dir} is not under {job.root}; report this bug"
        )
    if os.path.lexists(ws.repo):  # a local worktree of an earlier attempt: no longer this
        with lock.worktrees(ws.root):  # see lock.worktrees
            git.remove_worktree(job.live, ws.repo)
        shutil.rmtree(ws.repo, ignore_errors=True)
    for sub in ("steps", "gates"):
        shutil.rmtree(ws.path(sub), ignore_errors=True)
    for name in (ws.result, ws.archive):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    os.makedirs(ws.dir, exist_ok=True)
    forget_tree(ws)
    previous = None  # an earlier attempt's; one no longer readable is rewritten
    with contextlib.suppress(OSError, ValueError, PatchgateError):
        previous = ws.read_meta()
    meta = Meta(
        issue=job.issue,
        live_repo=job.live,
        base_sha=job.base,
        base_tree=git.tree_of(job.live, job.base),
        attempt=previous.attempt + 1 if previous else 1,
        patch=job.patch,
        patch_sha256=job.patch_sha256,
        created=previous.created if previous else time.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
    )
    write_json(ws.meta, meta.to_json(), META_SCHEMA)
    by = {"executor": "dask", "worker": outcome.worker, "key": job.key}
    odd = sorted(rel for rel in outcome.files if not RECORD_NAME.match(rel))
    if odd:  # a worker names only the workspace's own records: nothing lands elsewhere
        outcome = Outcome("refused", outcome.worker, f"sent a file outside its records: {odd[0]!r}")
    if outcome.log:
        report.log(job.log, f"--- log of {outcome.worker} ---\n{outcome.log}--- end of log ---")
    if outcome.status != "done" or "result.json" not in outcome.files:
        reason = (
            f"worker {outcome.worker}: {outcome.reason or 'no result'}, after one retry on "
            "another worker; check the workers (doit verify again resubmits)"
        )
        result = worker_failure(job, reason)
        record(job, replace(result, verified_by=by))
        raise PatchgateError("WORKER", reason)
    for rel, data in outcome.files.items():
        if rel in ("result.json", "meta.json"):
            continue
        full = ws.path(rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(data)
    sent = json.loads(outcome.files["result.json"])
    result = Result.from_json(sent, "WORKER")
    result = replace(result, patch=job.patch, verified_by=by)
    record(job, result)
    if result.verification_status != "pass":
        raise PatchgateError(result.stage or "VERIFY", result.reason or "failed")


def worker_failure(job: Job, reason: str) -> Result:
    return Result(
        patch_id=f"{job.issue}@{job.patch_sha256[:12]}",
        issue=job.issue,
        patch=job.patch,
        base_sha=job.base,
        patch_sha256=job.patch_sha256,
        build_status="not_run",
        test_results=[],
        gates={},
        verification_status="fail",
        stage="WORKER",
        reason=reason,
        tree=None,
        files=[],
        changes=[],
        summary={"RESULT": "FAIL", "STAGE": "WORKER", "REASON": reason},
    )


def record(job: Job, result: Result) -> None:
    """result.json and its verify event, as a local run records them; they name the worker."""
    from .verify import record_verdict  # verify declares this module's step

    record_verdict(Workspace(job.root, job.issue), result)


# --- the worker's side ------------------------------------------------------------------------


def worker_dir() -> str:
    default = os.path.join(tempfile.gettempdir(), f"patchgate-worker-{os.getuid()}")
    return os.environ.get(WORKER_DIR_ENV) or default


def worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:  # not in a worker: called directly
        return f"local:{os.getpid()}"


def has_bundle(sha: str) -> bool:
    """The cheap check: does this worker's cache hold the bundle ``sha``?"""
    return os.path.exists(os.path.join(worker_dir(), "bundles", f"{sha}.bundle"))


def store_bundle(cache: str, sha: str, data: bytes) -> str:
    path = os.path.join(cache, "bundles", f"{sha}.bundle")
    if os.path.exists(path):
        return path
    if hashlib.sha256(data).hexdigest() != sha:
        raise PatchgateError(
            "WORKER", "the bundle sent does not match its sha256; run doit verify again"
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path


def mirror_of(cache: str, bundle: str, base: str) -> str:
    """A bare repository holding ``base``, made once per worker cache from the bundle."""
    mirror = os.path.join(cache, "mirrors", f"{base}.git")
    if os.path.isdir(mirror):
        return mirror
    tmp = f"{mirror}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    git.mirror_bundle(tmp, bundle, "+refs/patchgate/*:refs/patchgate/*", base, "WORKER")
    try:
        os.rename(tmp, mirror)
    except OSError:  # another task made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return mirror


def verify_job(task: WorkerTask, bundle: bytes | None) -> Outcome:
    """Run on a worker: the host's verify chain on a clone of the base, records sent back."""
    started = time.monotonic()
    worker = worker_address()
    cache = worker_dir()
    path = os.path.join(cache, "bundles", f"{task.bundle_sha256}.bundle")
    if not os.path.exists(path):
        if bundle is None:
            return Outcome("need_bundle", worker)
        try:
            store_bundle(cache, task.bundle_sha256, bundle)
        except (OSError, PatchgateError) as exc:
            return Outcome("refused", worker, f"cannot store the bundle: {exc}")
    try:
        if task.settings["jail"] != "none":
            jail.preflight("bwrap")
        if not os.path.isdir(task.settings["tool_env"]):
            raise PatchgateError(
                "WORKER",
                f"the tool environment {task.settings['tool_env']} is missing here; install "
                "it at the same path on every worker",
            )
        if toolchain_id(task.settings["tool_env"]) != task.toolchain:
            raise PatchgateError(
                "WORKER",
                f"the tool environment {task.settings['tool_env']} here differs from the "
                "host's (other packages or Python); install the same versions",
            )
        with project(cache, task, path) as folder:
            return run_verify(folder, task, worker, started)
    except PatchgateError as err:
        return Outcome("refused", worker, err.message, seconds=time.monotonic() - started)


@contextlib.contextmanager
def project(cache: str, task: WorkerTask, bundle: str) -> Iterator[str]:
    """A worker-local project folder: a clone of the base, the patch, the host's config."""
    mirror = mirror_of(cache, bundle, task.base)
    folder = os.path.join(cache, "projects", f"{task.key[:16]}-{uuid.uuid4().hex[:8]}")
    os.makedirs(os.path.join(folder, "patches"))
    try:
        with open(os.path.join(folder, "worker.pid"), "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        repo = os.path.join(folder, "repo")
        git.shared_checkout(folder, mirror, repo, task.base, "WORKER")
        with open(os.path.join(folder, config.CONFIG_FILE), "w", encoding="utf-8") as fh:
            json.dump(task.settings, fh, indent=1)  # JSON is YAML
        with open(os.path.join(folder, "dodo.py"), "w", encoding="utf-8") as fh:
            fh.write("from patchgate.dodo import *  # noqa: F403\n")
        with open(os.path.join(folder, "patches", task.patch_name), "wb") as fh:
            fh.write(task.patch_bytes)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_verify(folder: str, task: WorkerTask, worker: str, started: float) -> Outcome:
    argv = (
        sys.executable,
        "-m",
        "doit",
        "verify",
        f"patch=patches/{task.patch_name}",
        f"issue={task.issue}",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "DOIT"))}
    done = proc.run(argv, cwd=folder, env=env, timeout=task.timeout, output_cap=1 << 20)
    ws = os.path.join(folder, "patches", "workspaces", f"issue_{task.issue}")
    files: dict[str, bytes] = {}
    for pattern in RECORDS:
        for full in sorted(glob.glob(os.path.join(ws, pattern))):
            with open(full, "rb") as fh:
                files[os.path.relpath(full, ws)] = fh.read()
    logs = sorted(glob.glob(os.path.join(folder, report.LOGS_DIR, f"*_issue_{task.issue}.log")))
    text = ""
    if logs:
        with open(logs[-1], encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    seconds = time.monotonic() - started
    if done.timed_out:
        return Outcome("refused", worker, f"verification timed out after {task.timeout:.0f}s")
    if "result.json" not in files:
        last = [ln for ln in done.output.splitlines() if ln.strip()][-3:]
        why = f"doit verify ended (exit {done.returncode}) without a result: {' | '.join(last)}"
        return Outcome("refused", worker, why, log=text + done.output, seconds=seconds)
    prepared = seconds - done.duration
    text += (
        f"worker: {prepared:.2f}s to prepare (checks, clone of the base), "
        f"{done.duration:.2f}s in doit verify\n"
    )
    return Outcome("done", worker, files=files, log=text, seconds=seconds)


# --- trust stays on the host -------------------------------------------------------------------


def recheck(ws_dir: str, log: str) -> None:
    """Before promoting a workspace verified elsewhere: recompute its tree here, or refuse.

    The patch is applied to the base in a scratch worktree of live, jailed as apply is, and
    the fixing gates (the only ones that change the tree) run on it as in verify; the tree
    that gives must be the worker's, and so must its changed paths and blobs. This also
    puts those objects into live's object store, from which promote lands them.
    """
    ws = Workspace.at(ws_dir)
    result = ws.read_result()
    by = result.verified_by
    if not isinstance(by, dict) or by.get("executor") != "dask":
        return
    from .apply import apply_patch
    from .gates import run_gate
    from .settings import settings_of
    from .verify import declared_files, final_changes
    from .workspace import ensure

    meta = ws.read_meta()
    patch, live = meta.patch, meta.live_repo
    worker = by.get("worker", "?")
    if not os.path.exists(patch) or sha256_file(patch) != result.patch_sha256:
        raise PatchgateError(
            "PROMOTE",
            f"the patch of issue {ws.issue} is not the one worker {worker} verified; "
            f"verify it again: doit verify issue={ws.issue}",
        )
    cfg = config.load(ws.root)
    settings = settings_of(cfg)  # promote's own: the jail and timeouts of this host
    scratch_parent = os.path.join(ws.root, RECHECK_DIR)
    os.makedirs(scratch_parent, exist_ok=True)
    scratch_root = tempfile.mkdtemp(prefix=f"{ws.issue}-", dir=scratch_parent)
    scratch = Workspace(scratch_root, ws.issue)
    report.log(log, f"promote: recomputing the tree verified by {worker} from base and patch")
    try:
        ensure(scratch.dir, live, result.base_sha, patch, result.patch_sha256, log)
        apply_patch(scratch.dir, patch, declared_files(patch), settings, log)
        source = scratch.step_file("apply")
        fixers = [g for g in config.effective_gates(cfg) if g.fixes]
        for gate in fixers:
            run_gate(scratch.dir, gate, source, settings, log)
            source = scratch.gate_file(gate.name)
        mine = final_changes(scratch, fixers)
    except PatchgateError as err:
        raise PatchgateError(
            "PROMOTE",
            f"the tree worker {worker} verified for issue {ws.issue} could not be recomputed "
            f"here ({err.stage}: {err.message}); fix this host (jail, tool environment), or "
            f"verify again here: doit verify issue={ws.issue} executor=local",
        ) from None
    finally:
        with lock.worktrees(ws.root):  # see lock.worktrees
            git.remove_worktree(live, scratch.repo)
        shutil.rmtree(scratch_root, ignore_errors=True)
    if mine["tree"] != result.tree or mine["changes"] != result.changes:
        raise PatchgateError(
            "PROMOTE",
            f"the tree worker {worker} reports for issue {ws.issue} ({str(result.tree)[:12]}) "
            f"is not the tree base and patch give here ({mine['tree'][:12]}); refusing to land "
            f"it: check that worker, then verify again (doit verify issue={ws.issue})",
        )
    report.log(log, f"promote: tree {mine['tree'][:12]} recomputed here: equal to the worker's")


__all__ = ["EXECUTORS", "cluster_step", "recheck", "verified_elsewhere", "wanted"]
