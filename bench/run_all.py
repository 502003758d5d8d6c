"""Run every benchmark under bench/ and print their tables one after another.

    python bench/run_all.py            # full sizes (a few minutes on 2 cores)
    python bench/run_all.py --quick    # smaller repositories, for a smoke check

Each bench_*.py prints its own table of figures and ratios measured side by side in one run;
this runner only sequences them and reports how long each took.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("bench_verify.py", "bench_jail.py", "bench_promote.py", "bench_provenance.py",
         "bench_audit.py")


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    scripts = [HERE / n for n in ORDER if (HERE / n).exists()]
    scripts += sorted(p for p in HERE.glob("bench_*.py") if p.name not in ORDER)
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.monotonic()
        args = [sys.executable, str(script), *(["--quick"] if quick else [])]
        code = subprocess.run(args, cwd=HERE.parent, check=False).returncode
        print(f"--- {script.name}: exit {code}, {time.monotonic() - start:.1f} s", flush=True)
        if code != 0:
            failed.append(script.name)
    print(f"\n{len(scripts) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
