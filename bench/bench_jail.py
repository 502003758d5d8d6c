"""What the jail costs: the fixed cost per step and the ratio on a ~1 s pytest gate.

    python bench/bench_jail.py [--runs N] [--gate-runs N]

Aim: a jailed gate takes at most 1.2x its unjailed time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from patchgate import jail

from bench.common import summary

BUSY_TEST = """
import time


def test_busy() -> None:
    end = time.perf_counter() + 1.0
    n = 0
    while time.perf_counter() < end:
        n += 1
    assert n > 0
"""


def timed(argv: Sequence[str], spec: jail.JailSpec, runs: int) -> float:
    """Median wall time in seconds of ``runs`` runs (after one warm-up)."""
    times = []
    for i in range(runs + 1):
        done = jail.run(argv, spec, env={}, timeout=120, output_cap=1 << 20)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({spec.mode}):\n{done.output}")
        if i:
            times.append(done.duration)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of `python -c pass`")
    parser.add_argument("--gate-runs", type=int, default=3, help="runs of the pytest gate")
    parser.add_argument("--quick", action="store_true", help="9 runs of python, 1 of the gate")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.gate_runs = min(args.runs, 9), 1
    warning = jail.preflight("bwrap")
    if warning:
        print(warning)
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as workdir:
        with open(os.path.join(workdir, "test_busy.py"), "w", encoding="utf-8") as fh:
            fh.write(BUSY_TEST)
        jailed = jail.JailSpec(mode="bwrap", workdir=workdir, readonly=(sys.prefix,))
        bare = jail.JailSpec(mode="none", workdir=workdir)

        noop = [sys.executable, "-c", "pass"]
        inside, outside = timed(noop, jailed, args.runs), timed(noop, bare, args.runs)
        print(
            f"python -c pass, median of {args.runs}: jailed {inside * 1000:.1f} ms, "
            f"unjailed {outside * 1000:.1f} ms, jail cost {(inside - outside) * 1000:.1f} ms"
        )

        gate = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_busy.py"]
        inside, outside = timed(gate, jailed, args.gate_runs), timed(gate, bare, args.gate_runs)
        print(
            f"~1 s pytest gate, median of {args.gate_runs}: jailed {inside:.3f} s, "
            f"unjailed {outside:.3f} s, ratio {inside / outside:.3f} (aim <= 1.2)"
        )
        summary(
            "+  a ~1 s pytest gate, jailed vs unjailed",
            f"{inside * 1000:.0f} ms",
            f"unjailed {outside * 1000:.0f} ms",
            f"{inside / outside:.2f}x",
            "<= 1.2x",
        )


if __name__ == "__main__":
    main()
