"""How promotion scales with the size of live: a one-file patch into 200 vs 20,000 files.

    python bench/bench_promote.py [--sizes 200,20000] [--quick] [--fs disk|shm|PATH] [-k N]

Each size is a project from bench/common.py (``make_project``) whose live repository has a
bare remote. For every run a fresh one-file patch is verified (untimed), then
``doit promote issue=…`` is timed end to end as a user runs it: doit start, lock, fetch, the
verify chain found up to date, preflight, journaled land, push, finish. The sizes are timed
interleaved (``side_by_side``), the median of k runs, after one untimed warm-up each.

The finish step records how long the success archive (``git archive`` of the commit) and the
workspace removal took. Both are O(files) by nature and are reported on their own; the
promotion figure is the rest. Aim: promotion at the largest size within 1.3x of the smallest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Bench,
    Timed,
    cache_bytecode,
    git,
    make_project,
    scratch_dir,
    side_by_side,
    summary,
)

AIM = 1.3
_runs = itertools.count()


def with_remote(bench: Bench) -> Bench:
    remote = bench.path / "remote.git"
    git(bench.path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(remote, "config", "gc.auto", "0")
    git(bench.live, "remote", "add", "origin", str(remote))
    git(bench.live, "push", "-q", "origin", "main")
    bench.configure(gates=[])
    return bench


class Promotion:
    """One size: ``prepare`` verifies a fresh patch (untimed), ``promote`` lands it (timed)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.issue = ""
        self.parts: list[dict[str, float]] = []

    def prepare(self) -> None:
        self.issue = f"run{next(_runs)}"
        target = "pkg0000/m01.py"
        text = (
            f'from pathlib import Path\n\nFILES = ["{target}"]\n\np = Path("{target}")\n'
            f'p.write_text(p.read_text() + "\\nRUN = \\"{self.issue}\\"\\n")\n'
        )
        self.bench.run("verify", f"patch={self.bench.patch(f'{self.issue}.py', text)}")

    def promote(self) -> None:
        self.bench.run("promote", f"issue={self.issue}")
        record = self.bench.path / "patches" / ".state" / "promoted" / f"{self.issue}.json"
        self.parts.append(json.loads(record.read_text())["timings"])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="repository sizes (default 200,20000)")
    parser.add_argument("--quick", action="store_true", help="200,5000 files, 3 runs")
    parser.add_argument("--fs", default="disk", help="disk (/tmp), shm (/dev/shm) or a folder")
    parser.add_argument("-k", type=int, default=None, help="runs per size (median)")
    args = parser.parse_args()
    sizes = sorted(
        int(s) for s in (args.sizes or ("200,5000" if args.quick else "200,20000")).split(",")
    )
    k = args.k or (3 if args.quick else 5)
    base = scratch_dir(args.fs, prefix="pgbench-promote-")
    cache_bytecode(base / "pycache")
    started = time.perf_counter()
    print(
        f"generating repositories of {', '.join(map(str, sizes))} files in {base} ...",
        file=sys.stderr,
    )
    try:
        promotions = [Promotion(with_remote(make_project(n, base))) for n in sizes]
        for p in promotions:  # warm-up: imports, bwrap probe, caches
            p.prepare()
            p.promote()
            p.parts.clear()
        totals = side_by_side([Timed(p.promote, p.prepare) for p in promotions], k)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"patchgate promote benchmark: {args.fs}, median of {k} (interleaved), "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    core: list[float] = []
    for p, total in zip(promotions, totals, strict=True):
        archive = statistics.median(t["archive_seconds"] for t in p.parts)
        cleanup = statistics.median(t["cleanup_seconds"] for t in p.parts)
        core.append(total - archive - cleanup)
        print(
            f"{p.bench.n_files:>6} files: promote {total:.3f} s end to end = promotion "
            f"{core[-1]:.3f} s + success archive {archive:.3f} s + workspace removal "
            f"{cleanup:.3f} s"
        )
    if len(sizes) > 1:
        ratio = core[-1] / core[0]
        verdict = "ok" if ratio <= AIM else "ABOVE AIM"
        print(
            f"promotion {sizes[-1]} vs {sizes[0]} files: {ratio:.2f}x (aim <= {AIM}x: "
            f"{verdict}); end to end {totals[-1] / totals[0]:.2f}x"
        )
        summary(
            f"+  promote a one-file patch, {sizes[-1]} vs {sizes[0]} files (w/o archive, cleanup)",
            f"{core[-1] * 1000:.0f} ms",
            f"{core[0] * 1000:.0f} ms",
            f"{ratio:.2f}x",
            f"<= {AIM}x",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
