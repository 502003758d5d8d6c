"""Run every benchmark under bench/, then print one summary table of the key figures.

    python bench/run_all.py            # full sizes (about 6 minutes on 2 cores)
    python bench/run_all.py --quick    # fewer runs, smaller logs (about 2 minutes); the
                                       # 20,000-file first verify runs once: a smoke figure,
                                       # this disk's checkout speed varies more than 2x

Each bench_*.py prints its own table of figures and ratios measured side by side in one run,
and hands its key rows to this runner (bench.common.summary: a JSON line per row in the file
named by $PATCHGATE_BENCH_SUMMARY). The closing table is the six measures of the benchmark
plan, numbered as in bench_verify.py, then the others (+):

1. no-op rerun of verify vs `python -c "import doit"`
2. re-verify after a one-file patch edit, 20,000 vs 200 files
3. first verify vs the raw `git worktree add` of the same repository
4. 8 patches with `-n 2 -P process` vs serially
5. a full verify with a trivial gate vs a hand-written shell script doing the same steps
6. `doit audit` incremental rerun vs first run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import SUMMARY_ENV, table  # noqa: E402

ORDER = (
    "bench_verify.py",
    "bench_audit.py",
    "bench_promote.py",
    "bench_jail.py",
    "bench_provenance.py",
)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    scripts = [HERE / n for n in ORDER if (HERE / n).exists()]
    scripts += sorted(p for p in HERE.glob("bench_*.py") if p.name not in ORDER)
    failed = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pgbench-summary-") as tmp:
        rows_file = os.path.join(tmp, "rows.jsonl")
        env = {**os.environ, SUMMARY_ENV: rows_file}
        for script in scripts:
            print(f"\n=== {script.name} ===", flush=True)
            start = time.monotonic()
            args = [sys.executable, str(script), *(["--quick"] if quick else [])]
            code = subprocess.run(args, cwd=HERE.parent, env=env, check=False).returncode
            print(f"--- {script.name}: exit {code}, {time.monotonic() - start:.1f} s", flush=True)
            if code != 0:
                failed.append(script.name)
        rows = []
        if os.path.exists(rows_file):
            with open(rows_file, encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
    rows.sort(key=lambda r: (r["measure"][:1] == "+", r["measure"][:2]))  # stable: 1..6, then +
    cells = [[r[k] for k in ("measure", "value", "reference", "ratio", "aim")] for r in rows]
    mode = "quick" if quick else "full"
    print(f"\n=== summary ({mode}, {time.monotonic() - started:.0f} s in all) ===")
    print(table(cells, ("measure", "value", "reference", "ratio", "aim")))
    print(f"\n{len(scripts) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
