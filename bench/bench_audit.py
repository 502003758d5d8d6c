"""How long `doit audit` takes on a big project: first run vs rerun after one append.

    python bench/bench_audit.py [EVENTS] [COMMITS] [--no-pycache]   (default 100000 10000)

A live repository of COMMITS patchgate commits (one in 200 a rollback) is written with
`git fast-import`, trailers made by trailers.format_message; the provenance log of EVENTS
events (an apply or rollback event for every commit, the rest proposals and failed
verifications of patches that never landed) is generated in bulk through chain_event /
format_line. Then `doit audit` runs as users run it (a subprocess) and is timed, as wall
time, median of REPEAT runs:

* first run: no checkpoint, no history cache, no doit state;
* no-op rerun: nothing changed (doit says `-- audit`);
* rerun after one appended event (the chain resumes, history is cached);
* rerun after one landed patch (a commit and its events: one commit walked);
* what a rerun pays whatever the audit does: the no-op rerun (doit's start-up, every task
  creator of dodo.py, the up-to-date check). The rest is the audit's own work. (Importing
  jsonschema to validate audit.json, ~0.1 s, is shown for reference: a valid audit.json is
  confirmed by tasks/schema.py's fast path without it.)

doit runs with a bytecode cache in a temporary folder (PYTHONPYCACHEPREFIX), as an installed
patchgate would: with PYTHONDONTWRITEBYTECODE set, every run compiles doit, jsonschema and
tasks/ from source, which costs more than the resumed audit itself. --no-pycache measures that.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from patchgate import provenance  # noqa: E402
from patchgate import trailers as tr  # noqa: E402

from bench.common import summary  # noqa: E402
from tests.doitcmd import doit_argv  # noqa: E402

REPEAT = 5
ROLLBACK_EVERY = 200
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@patchgate.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@patchgate.invalid",
}


def git(repo: str, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", repo, *args], input=stdin, capture_output=True, check=True, env=GIT_ENV
    )
    return done.stdout.decode().strip()


def _data(text: str) -> bytes:
    raw = text.encode()
    return b"data %d\n%s\n" % (len(raw), raw)


def _commit_item(i: int, contents: dict[str, str], plan: list[dict[str, Any]]) -> dict[str, Any]:
    """What commit ``i`` is: a patch, or (one in ROLLBACK_EVERY) the revert of the one before."""
    if i % ROLLBACK_EVERY == ROLLBACK_EVERY - 1:
        prior = plan[-1]
        return {
            "kind": "rollback",
            "rollback_id": f"rb-{i:06d}",
            "patch_id": prior["patch_id"],
            "reverts_index": i - 1,
            "path": prior["path"],
            "text": prior["before"],
        }
    path = f"src/m{i % 97}.py"
    return {
        "kind": "patch",
        "patch_id": f"issue_{i}@{i:012x}",
        "path": path,
        "before": contents.get(path, ""),
        "text": f"VALUE = {i}\n",
    }


def _message(i: int, item: dict[str, Any], plan: list[dict[str, Any]]) -> str:
    if item["kind"] == "rollback":
        reverted = plan[item["reverts_index"]]["sha"]
        return tr.format_message(
            f'Revert "patchgate: {item["patch_id"]}"',
            f"This reverts commit {reverted}.",
            [
                (tr.ROLLBACK_ID, item["rollback_id"]),
                (tr.REVERTS, reverted),
                (tr.REASON, "regression"),
                (tr.OPERATOR, "oncall"),
            ],
        )
    return tr.format_message(
        f"patchgate: issue_{i}",
        "Verified in its workspace.",
        [
            (tr.PATCH_ID, item["patch_id"]),
            (tr.ISSUE, f"issue_{i}"),
            (tr.VERIFICATION, tr.verification_value("pass", {"ruff": "pass", "pytest": "pass"})),
            (tr.FILES, item["path"]),
            (tr.OPERATOR, f"op{i % 7}"),
        ],
    )


def make_history(live: str, count: int) -> list[dict[str, Any]]:
    """``count`` commits through fast-import; returns what each is, with its sha (for the log).

    A rollback's message names the sha of the commit it reverts, so the import is cut before
    each rollback: one fast-import per ROLLBACK_EVERY commits, marks carried over.
    """
    git(live, "init", "-q", "-b", "main")
    git(live, "config", "gc.auto", "0")
    marks = os.path.join(live, ".git", "bench-marks")
    contents: dict[str, str] = {}
    plan: list[dict[str, Any]] = []
    for i in range(count):
        plan.append(_commit_item(i, contents, plan))
        contents[plan[-1]["path"]] = plan[-1]["text"]
    cuts = [0, *(i for i in range(count) if plan[i]["kind"] == "rollback"), count]
    for start, stop in itertools.pairwise(cuts):
        stream = []
        for i in range(start, stop):
            item = plan[i]
            stream.append(b"commit refs/heads/main\nmark :%d\n" % (i + 1))
            stream.append(
                b"committer Bench <bench@patchgate.invalid> %d +0000\n" % (1_700_000_000 + i * 60)
            )
            stream.append(_data(_message(i, item, plan)))
            if i == start and i > 0:
                stream.append(b"from :%d\n" % i)
            stream.append(b"M 100644 inline %s\n" % item["path"].encode())
            stream.append(_data(item["text"]))
        args = ["fast-import", "--quiet", f"--export-marks={marks}"]
        if start:
            args.append(f"--import-marks={marks}")
        git(live, *args, stdin=b"".join(stream))
        with open(marks, encoding="ascii") as fh:
            by_mark = dict(line.split() for line in fh)
        for i in range(start, stop):
            plan[i]["sha"] = by_mark[f":{i + 1}"]
    git(live, "reset", "-q", "--hard", "main")
    return plan


def make_log(root: str, plan: list[dict[str, Any]], count: int) -> None:
    landed = plan
    per_commit = {"patch": 3, "rollback": 1}
    needed = sum(per_commit[p["kind"]] for p in landed)
    fillers = max(0, count - needed)  # pairs of propose + verify_fail, spread between commits
    fields: list[dict[str, Any]] = []
    spare = fillers
    for n, item in enumerate(landed):
        share = spare // (len(landed) - n)
        share -= share % 2
        for k in range(share // 2):
            pid = f"never_{n}_{k}@{n:08x}{k:04x}"
            fields.append({"event": "propose", "patch_id": pid, "affected_files": [item["path"]]})
            fields.append(
                {
                    "event": "verify_fail",
                    "patch_id": pid,
                    "stage": "GATES",
                    "reason": "pytest: 1 failed",
                    "affected_files": [item["path"]],
                }
            )
        spare -= share
        if item["kind"] == "patch":
            pid = item["patch_id"]
            fields.append({"event": "propose", "patch_id": pid, "affected_files": [item["path"]]})
            fields.append(
                {
                    "event": "verify_pass",
                    "patch_id": pid,
                    "gates": {"ruff": "pass", "pytest": "pass"},
                    "affected_files": [item["path"]],
                }
            )
            fields.append(
                {
                    "event": "apply",
                    "patch_id": pid,
                    "commit_hash": item["sha"],
                    "operator": "bench",
                    "files": [item["path"]],
                    "push": "SKIPPED",
                }
            )
        else:
            fields.append(
                {
                    "event": "rollback",
                    "patch_id": item["patch_id"],
                    "rollback_id": item["rollback_id"],
                    "reason": "regression",
                    "operator": "oncall",
                    "revert_commit": item["sha"],
                    "reverted_commit": plan[item["reverts_index"]]["sha"],
                }
            )
    while len(fields) < count:
        fields.append({"event": "propose", "patch_id": f"tail_{len(fields)}"})
    now, prev, lines = provenance.utc_now(), provenance.GENESIS_HASH, []
    for seq, item in enumerate(fields):
        event = provenance.chain_event(item, seq, prev, now)
        lines.append(provenance.format_line(event))
        prev = event["hash"]
    os.makedirs(os.path.join(root, "audit"), exist_ok=True)
    with open(provenance.log_path(root), "wb") as fh:
        fh.write(b"".join(lines))
        fh.flush()
        os.fsync(fh.fileno())


PYTHON_ENV = dict(os.environ)


def doit(root: str, *args: str) -> tuple[float, str]:
    argv = doit_argv(root, *args)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=PYTHON_ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"doit {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout


def results(root: str) -> dict[str, Any]:
    with open(os.path.join(root, "audit", "results", "audit.json"), encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def import_cost(module: str) -> float:
    """Seconds ``import module`` adds to a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=PYTHON_ENV
    )
    return float(done.stdout)


def land_one(root: str, live: str, n: int) -> None:
    path = os.path.join(live, "src", "bench_new.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"N = {n}\n")
    git(live, "add", "src/bench_new.py")
    pid = f"new_{n}@{n:012x}"
    message = tr.format_message(
        f"patchgate: new_{n}", "", [(tr.PATCH_ID, pid), (tr.FILES, "src/bench_new.py")]
    )
    git(live, "commit", "-q", "--cleanup=verbatim", "-F", "-", stdin=message.encode())
    sha = git(live, "rev-parse", "HEAD")
    provenance.append_event(root, {"event": "verify_pass", "patch_id": pid})
    provenance.append_event(root, {"event": "apply", "patch_id": pid, "commit_hash": sha})


def main(events: int, commits: int, pycache: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if pycache:
            PYTHON_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
            PYTHON_ENV["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
            doit(tmp, "list")  # compile once

        root = os.path.join(tmp, "project")
        live = os.path.join(root, "live")
        os.makedirs(os.path.join(root, "patches"))
        os.makedirs(live)
        with open(os.path.join(root, "patchgate.yaml"), "w", encoding="utf-8") as fh:
            fh.write("live_repo: live\ngates: []\n")
        start = time.perf_counter()
        plan = make_history(live, commits)
        history_s = time.perf_counter() - start
        start = time.perf_counter()
        make_log(root, plan, events)
        log_s = time.perf_counter() - start
        size = os.path.getsize(provenance.log_path(root))
        print(
            f"history: {commits:,} commits via fast-import in {history_s:.1f} s; "
            f"log: {events:,} events ({size / 1e6:.1f} MB) in {log_s:.1f} s"
        )

        firsts = []
        for _ in range(REPEAT):
            shutil.rmtree(os.path.join(root, "audit", "results"), ignore_errors=True)
            shutil.rmtree(os.path.join(root, "patches", ".state"), ignore_errors=True)
            elapsed, out = doit(root, "audit")
            assert ".  audit" in out, out
            firsts.append(elapsed)
        first = results(root)
        assert first["verdict"] == "pass" and first["chain"]["events"] == events, first["summary"]
        assert first["history"]["commits"] == commits

        noops = []
        for _ in range(REPEAT):
            elapsed, out = doit(root, "audit")
            assert "-- audit" in out, out
            noops.append(elapsed)

        appends = []
        for k in range(REPEAT):
            provenance.append_event(root, {"event": "propose", "patch_id": f"late_{k}"})
            elapsed, out = doit(root, "audit")
            data = results(root)
            assert data["chain"]["resumed"] and data["chain"]["lines_parsed"] == 1, data["chain"]
            appends.append(elapsed)

        landings = []
        for k in range(REPEAT):
            land_one(root, live, k)
            elapsed, out = doit(root, "audit")
            data = results(root)
            assert data["history"]["incremental"] and data["history"]["walked"] == 1
            assert data["verdict"] == "pass", data["summary"]
            landings.append(elapsed)

        schema_imports = [import_cost("jsonschema") for _ in range(REPEAT)]

    base = statistics.median(firsts)
    rows = [
        ("first run (full chain, full history)", firsts),
        ("no-op rerun (up to date)", noops),
        ("rerun after 1 appended event", appends),
        ("rerun after 1 landed patch (commit + 2 events)", landings),
        ("import jsonschema (no longer paid: see schema.py)", schema_imports),
    ]
    mode = "bytecode cache" if pycache else "no bytecode cache"
    title = f"doit audit, wall time, median of {REPEAT} ({mode})"
    print(f"\n{title:<50} {'s':>8} {'of first':>9}   samples")
    for name, times in rows:
        med = statistics.median(times)
        print(f"{name:<50} {med:8.3f} {med / base:9.1%}   " + " ".join(f"{t:.2f}" for t in times))
    own = statistics.median(appends) - statistics.median(noops)
    print(f"{'the audit own work (after 1 event - no-op)':<50} {own:8.3f} {own / base:9.1%}")
    incremental = statistics.median(appends)
    summary(
        f"6. doit audit, incremental rerun (1 new event) vs first run ({events:,} events, "
        f"{commits:,} commits)",
        f"{incremental * 1000:.0f} ms",
        f"first run {base * 1000:.0f} ms",
        f"{incremental / base:.2f}x",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", type=int, nargs="?", default=None)
    parser.add_argument("commits", type=int, nargs="?", default=None)
    parser.add_argument("--no-pycache", action="store_true", help="compile every run, as set here")
    parser.add_argument("--quick", action="store_true", help="20,000 events, 2,000 commits, 3 runs")
    opts = parser.parse_args()
    if opts.quick:
        REPEAT = 3
    events = opts.events or (20_000 if opts.quick else 100_000)
    commits = opts.commits or (2_000 if opts.quick else 10_000)
    main(events, commits, not opts.no_pycache)
