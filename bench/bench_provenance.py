"""How long the provenance log takes to verify: full chain vs incremental after one append.

    python bench/bench_provenance.py [EVENTS]      (default 100000)

The log is generated in bulk through the same chain_event/format_line the appends use, then:
a full verify_chain, one append_event (the tail read must not depend on the log's length),
and a verify_chain resumed from the full run's checkpoint.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from patchgate import provenance

from bench.common import summary


def sample(i: int) -> dict[str, Any]:
    """A realistic mix: mostly verify events, some proposals and promotions."""
    patch = f"issue_{i // 4}@{i:012x}"
    kind = i % 4
    if kind == 0:
        return {"event": "propose", "patch_id": patch, "affected_files": [f"src/m{i % 97}.py"]}
    if kind == 1:
        return {
            "event": "verify_fail",
            "patch_id": patch,
            "stage": "GATE",
            "reason": "mypy: 2 errors",
            "build_status": "pass",
            "test_results": [{"command": "pytest -q", "exit_code": 1, "duration_seconds": 3.2}],
            "gates": {"ruff": "pass", "mypy": "fail", "pytest": "fail"},
        }
    if kind == 2:
        return {
            "event": "verify_pass",
            "patch_id": patch,
            "build_status": "pass",
            "test_results": [{"command": "pytest -q", "exit_code": 0, "duration_seconds": 3.1}],
            "gates": {"ruff": "pass", "mypy": "pass", "pytest": "pass"},
        }
    return {"event": "apply", "patch_id": patch, "commit_hash": f"{i:040x}", "push": "OK"}


def generate(root: str, count: int) -> None:
    os.makedirs(os.path.join(root, "audit"))
    prev, now, lines = provenance.GENESIS_HASH, provenance.utc_now(), []
    for seq in range(count):
        event = provenance.chain_event(sample(seq), seq, prev, now)
        lines.append(provenance.format_line(event))
        prev = event["hash"]
    with open(provenance.log_path(root), "wb") as fh:
        fh.write(b"".join(lines))
        fh.flush()
        os.fsync(fh.fileno())  # else the first append's fsync pays for the whole file


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        gen_s, _ = timed(generate, root, count)
        size = os.path.getsize(provenance.log_path(root))
        full_s, full = timed(provenance.verify_chain, root)
        assert full.ok and full.lines_parsed == count
        with tempfile.TemporaryDirectory() as scratch:  # first use imports jsonschema
            cold_s, _ = timed(provenance.append_event, scratch, sample(0))
        append_s, _ = timed(provenance.append_event, root, sample(count))
        incr_s, incr = timed(provenance.verify_chain, root, full.checkpoint)
        assert incr.ok and incr.resumed and incr.lines_parsed == 1
    print(f"events:               {count:,} ({size / 1e6:.1f} MB), generated in {gen_s:.2f} s")
    print(f"verify_chain full:    {full_s * 1e3:9.1f} ms ({full_s / count * 1e6:.1f} µs/event)")
    print(
        f"append_event:         {append_s * 1e3:9.2f} ms on the {count:,}-event log "
        f"(first append of a process: {cold_s * 1e3:.0f} ms, loading the schema)"
    )
    print(f"verify_chain resumed: {incr_s * 1e3:9.2f} ms (lines parsed: {incr.lines_parsed})")
    print(f"full / resumed:       {full_s / incr_s:9.0f}x")
    summary(
        f"+  provenance: append to a {count:,}-event log",
        f"{append_s * 1e3:.2f} ms",
        f"verify_chain full {full_s * 1e3:.0f} ms",
        f"resumed {incr_s * 1e3:.2f} ms",
    )


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if not a.startswith("-")]
    main(int(numbers[0]) if numbers else 20_000 if "--quick" in sys.argv else 100_000)
