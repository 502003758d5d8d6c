"""16 patches verified serially, with `doit -n 2`, and on a 2-worker Dask cluster, in one run.

    python bench/bench_cluster.py [--patches 16] [--files 200]

Three copies of one project (a generated live repository of --files files, gates ruff-format,
a fixer, and ruff, both jailed) each verify the same 16 one-file patches from scratch:

1. `doit verify patch='patches/*'`                          serially, here
2. `doit -n 2 -P process verify patch='patches/*'`          two at a time, here
3. `doit verify patch='patches/*' executor=dask scheduler=…` on a 2-worker LocalCluster
   (1 thread each) started by this script; its start-up is reported apart

and then prints the coordinator's overhead per patch: the cluster run's wall time minus the
time the workers spent verifying (summed over workers, divided by the worker count), per
patch; plus the bundle's size and the time to make it (once per base commit).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Bench,
    cache_bytecode,
    edit_script,
    make_project,
    module_text,
    scratch_dir,
    summary,
    table,
)

GATES = [
    {
        "name": "ruff-format",
        "command": ["ruff", "format", "--no-cache", "{files}"],
        "files": ["*.py"],
        "fixes": True,
    },
    {"name": "ruff", "command": ["ruff", "check", "--no-cache", "{files}"], "files": ["*.py"]},
]
DONE = re.compile(r"cluster: done on (\S+): ([0-9.]+)s on the worker")
LANDED = re.compile(r"cluster: records landed here in ([0-9.]+)s")


def copy_of(bench: Bench, name: str) -> Bench:
    target = bench.path.parent / name
    shutil.copytree(bench.path, target, symlinks=True)
    return Bench(target, bench.n_files)


def timed(bench: Bench, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    out = bench.run(*args, check=False)
    return time.monotonic() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=16)
    parser.add_argument("--files", type=int, default=200)
    opts = parser.parse_args()
    cache_bytecode(Path(tempfile.gettempdir()) / "patchgate-bench-pycache")
    base = scratch_dir()
    bench = make_project(opts.files, base=base, gates=GATES)
    for i in range(opts.patches):
        path = f"pkg0000/m{i:02d}.py"
        text = module_text(0, i) + f"\n\ndef extra_{i}(x: int) -> int:\n    return x*{i}\n"
        bench.patch(f"p{i:02d}.py", edit_script(path, text))
    serial, parallel, remote = (copy_of(bench, n) for n in ("serial", "parallel", "cluster"))

    import dask
    from distributed import LocalCluster
    from patchgate import cluster

    started = time.monotonic()
    workers = 2
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        lc = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            env={cluster.WORKER_DIR_ENV: str(base / "worker-cache")},
        )
    startup = time.monotonic() - started
    try:
        t_serial, out_s = timed(serial, "verify", "patch=patches/*.py")
        t_par, out_p = timed(parallel, "-n", "2", "-P", "process", "verify", "patch=patches/*.py")
        t_cluster, out_c = timed(
            remote,
            "verify",
            "patch=patches/*.py",
            "executor=dask",
            f"scheduler={lc.scheduler_address}",
        )
    finally:
        lc.close()
    n = opts.patches
    for name, out in (("serial", out_s), ("-n 2", out_p), ("cluster", out_c)):
        if f"{n} passed, 0 failed" not in out:
            print(out[-3000:])
            raise SystemExit(f"bench_cluster: the {name} run did not pass every patch")
    logs = [p.read_text() for p in (remote.path / "patches" / "logs").glob("*_issue_*.log")]
    worker_seconds = [float(m[2]) for log in logs for m in DONE.finditer(log)]
    landed = sorted(float(m[1]) for log in logs for m in LANDED.finditer(log))
    busy = sum(worker_seconds) / workers
    overhead = (t_cluster - busy) / n
    index = next((remote.path / "patches" / ".state" / "bundles").glob("*.json"))
    bundle_bytes = json.loads(index.read_text())["bytes"]
    rows = [
        ("serial", f"{t_serial:.1f} s", f"{t_serial / n:.2f} s", "1.00x"),
        (
            "doit -n 2 -P process",
            f"{t_par:.1f} s",
            f"{t_par / n:.2f} s",
            f"{t_par / t_serial:.2f}x",
        ),
        (
            f"dask, {workers} workers",
            f"{t_cluster:.1f} s",
            f"{t_cluster / n:.2f} s",
            f"{t_cluster / t_serial:.2f}x",
        ),
    ]
    print(f"{n} patches, {opts.files}-file repository, gates ruff-format + ruff (jailed)\n")
    print(table(rows, ("run", "wall", "per patch", "vs serial")))
    print(
        f"\nLocalCluster start-up ({workers} worker processes): {startup:.1f} s (not in the row)"
        f"\nworker time per verification: median "
        f"{sorted(worker_seconds)[len(worker_seconds) // 2]:.2f} s over {len(worker_seconds)}"
        f"\ncoordinator overhead per patch: {overhead:.2f} s (wall - worker time / {workers})"
        f"\nhost's own work per patch (records into the workspace, event): median "
        f"{landed[len(landed) // 2] * 1000:.0f} ms"
        f"\nbundle of the base: {bundle_bytes / 1024:.0f} KiB, made once per base commit"
    )
    summary(
        "cluster: 16 patches on 2 workers vs serial",
        f"{t_cluster:.1f} s",
        f"{t_serial:.1f} s",
        f"{t_cluster / t_serial:.2f}x",
    )
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
