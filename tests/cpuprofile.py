"""Where the suite's time goes, measured in CPU seconds: a figure the machine's load hardly moves.

    PATCHGATE_TEST_CPU=/tmp/cpu.jsonl bin/test          # conftest appends one line per test
    python tests/cpuprofile.py /tmp/cpu.jsonl [N]      # the files and the N tests costing most

Each line is the test's node id, its wall seconds and the CPU seconds (user + system) of the
pytest process and of every child it waited for (doit runs, git, gates, jails) while the test
ran, fixture set-up included: a module fixture is charged to the first test that uses it. On a
shared machine the wall time of a test says more about the other users than about the test; the
CPU time is what the suite costs on an idle one (divided among the cores: bin/test runs one
pytest-xdist worker per core).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path


def cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children, so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Meter:
    """The CPU and wall seconds of one test (start, then stop with its node id)."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.cpu = cpu_seconds()
        self.wall = time.perf_counter()

    def stop(self, nodeid: str) -> None:
        line = {
            "test": nodeid,
            "cpu": round(cpu_seconds() - self.cpu, 3),
            "wall": round(time.perf_counter() - self.wall, 3),
        }
        with open(self.log, "a", encoding="utf-8") as fh:  # one short append per test
            fh.write(json.dumps(line) + "\n")


def main(argv: list[str]) -> int:
    rows = [json.loads(line) for line in Path(argv[0]).read_text().splitlines() if line]
    top = int(argv[1]) if len(argv) > 1 else 20
    files: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for row in rows:
        entry = files[row["test"].split("::")[0]]
        entry[0] += 1
        entry[1] += row["cpu"]
        entry[2] += row["wall"]
    total_cpu = sum(r["cpu"] for r in rows)
    print(f"{len(rows)} tests, {total_cpu:.0f} CPU s, {sum(r['wall'] for r in rows):.0f} wall s")
    print(f"{'file':36} {'tests':>5} {'CPU s':>8} {'share':>6} {'wall s':>8}")
    for name, (n, cpu, wall) in sorted(files.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:36} {n:5.0f} {cpu:8.1f} {cpu / total_cpu:6.1%} {wall:8.1f}")
    print(f"\nthe {top} tests costing most CPU:")
    for row in sorted(rows, key=lambda r: -r["cpu"])[:top]:
        print(f"{row['cpu']:7.1f} {row['wall']:7.1f}  {row['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
