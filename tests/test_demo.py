"""doit demo, the README's first command: the whole lifecycle on the embedded demo."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
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
    # issue 15: the landing went red on the fake forge; one red was a suspect, the re-run
    # confirmed it; watch proposed with the exact CONFIRM line, the operator ran it, and the
    # forge's issue shows the landing, the proposal, then the revert
    [landed, reverted] = git(demo / "live", "log", "-3", "--format=%H").splitlines()[1:][::-1]
    assert "suspect: integration red (1 of 2 runs" in res.out
    assert f"watch: {landed[:12]}: ROLLBACK PROPOSED: ci: integration: failure" in res.out
    assert "first failing test: tests/test_report.py:8" in res.out
    [proposal] = [
        json.loads(line)
        for line in (demo / "audit" / "provenance.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "rollback_proposed"
    ]
    assert proposal["sha"] == landed and f"  CONFIRM: {proposal['confirm']}" in res.out
    token = proposal["confirm"].split()[3]
    assert f"$ doit rollback sha={landed} {token} operator=demo-operator" in res.out
    assert f"```\n  {proposal['confirm']}\n  ```" in res.out  # the proposal comment on #1
    assert f"**patchgate rolled back `{landed}`** in `{reverted}`" in res.out
    rolled_back = res.out.split(f"**patchgate rolled back `{landed}`**")[1]
    assert "- reason: CI went red after the landing" in rolled_back
    assert "- failure: ci: integration: failure (https://ci.invalid/demo/calc/" in rolled_back
    assert "cc @demo/maintainers" in res.out and "fake GitHub for demo/calc" in res.out
    assert "forge:" not in (demo / "patchgate.yaml").read_text()  # no dead port left behind
    port = int(re.search(r"fake GitHub for demo/calc serves http://127.0.0.1:(\d+)", res.out)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the fake forge stopped with the demo
    # issue 14: a proposal failed mypy, was refined, passed, and the operator promoted it
    assert events.count("propose") == 2
    assert "mypy: calc/ops.py" in res.out and "PROMOTE: doit promote issue=demo_mul" in res.out
    assert "Proposed-by: demo-model via http://127.0.0.1:" in git(demo / "live", "log", "-1")
    assert res.summary["PROPOSED"] == git(demo / "live", "rev-parse", "HEAD")
