"""doit demo, the README's first command: the whole lifecycle on the embedded demo."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Project, git


def test_demo_runs_the_whole_lifecycle(tmp_path: Path) -> None:
    project = Project(tmp_path, tmp_path / "build" / "demo" / "live")
    res = project.run("demo", timeout=300)
    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS"
    demo = tmp_path / "build" / "demo"
    # the good patch landed and was rolled back, the bad one was refused by mypy
    assert "mypy: calc/ops.py" in res.out
    log = git(demo / "live", "log", "--format=%s")
    assert log.splitlines()[1].startswith("Revert ")  # [0]: the promoted proposal (below)
    assert git(demo / "remote.git", "rev-parse", "main") == git(demo / "live", "rev-parse", "HEAD")
    events = [
        json.loads(line)["event"]
        for line in (demo / "audit" / "provenance.jsonl").read_text().splitlines()
    ]
    assert {"verify_pass", "verify_fail", "apply", "rollback"} <= set(events)
    # issue 14: a proposal failed mypy, was refined, passed, and the operator promoted it
    assert events.count("propose") == 2
    assert "mypy: calc/ops.py" in res.out and "PROMOTE: doit promote issue=demo_mul" in res.out
    assert "Proposed-by: demo-model via http://127.0.0.1:" in git(demo / "live", "log", "-1")
    assert res.summary["PROPOSED"] == git(demo / "live", "rev-parse", "HEAD")
