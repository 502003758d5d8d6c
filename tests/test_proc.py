"""proc.run: timeouts kill the whole group, output is capped, the environment is allowlisted."""

from __future__ import annotations

import os
import resource
import select
import sys
import time
from pathlib import Path

import pytest
from patchgate import jail, proc


def test_output_and_exit_code_are_returned() -> None:
    done = proc.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert done.returncode == 3
    assert done.output == "out\nerr\n"
    assert not done.timed_out and not done.truncated


def test_input_bytes_reach_stdin() -> None:
    assert proc.run(["cat"], input_bytes=b"patch text\n").output == "patch text\n"


def test_a_missing_command_is_127() -> None:
    done = proc.run(["patchgate-no-such-command"])
    assert done.returncode == 127
    assert done.output == "patchgate-no-such-command: command not found\n"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        start = time.monotonic()
        done = proc.run(["sh", "-c", f"sleep 30 > {fifo} & sleep 30"], timeout=0.3)
        assert done.timed_out and done.returncode == -9
        os.set_blocking(reader, True)
        ready, _, _ = select.select([reader], [], [], 3.0)
        assert ready and os.read(reader, 1) == b""  # EOF: the background writer is gone too
        assert time.monotonic() - start < 2.0
    finally:
        os.close(reader)


def test_output_beyond_the_cap_is_cut_with_a_marker() -> None:
    done = proc.run([sys.executable, "-c", "print('y' * 5000, end='')"], output_cap=1000)
    assert done.truncated
    assert done.output == "y" * 1000 + (
        "\n[patchgate: output truncated after 1000 bytes; 4000 bytes dropped]\n"
    )


def test_clean_env_keeps_only_allowlisted_and_pinned_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fake")
    monkeypatch.setenv("PATCHGATE_PUSH_TOKEN", "fake")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = proc.clean_env({"GATE": "1"})
    assert "GITHUB_TOKEN" not in env and "PATCHGATE_PUSH_TOKEN" not in env
    assert env["PATH"] == "/usr/bin:/bin"
    assert {k: env[k] for k in ("TZ", "LANG", "LC_ALL", "PYTHONHASHSEED", "GATE")} == {
        "TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "GATE": "1",
    }  # fmt: skip


def test_run_without_env_uses_the_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fake")
    done = proc.run([sys.executable, "-c", "import os; print(sorted(os.environ))"])
    assert "GITHUB_TOKEN" not in done.output and "'TZ'" in done.output


def test_limits_are_set_in_the_child() -> None:
    code = "try:\n    bytearray(512 << 20)\nexcept MemoryError:\n    print('MemoryError')"
    done = proc.run([sys.executable, "-c", code], limits={resource.RLIMIT_AS: 256 << 20})
    assert done.output.strip() == "MemoryError"
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != 256 << 20  # the parent is untouched


def test_the_child_joins_the_given_cgroup() -> None:
    parent = jail._cgroup_parent()
    if parent is None:
        pytest.skip("no writable pids cgroup here; the jail falls back to RLIMIT_NPROC")
    cgroup = os.path.join(parent, f"patchgate-{os.getpid()}-test")
    os.mkdir(cgroup)
    try:
        done = proc.run(["cat", "/proc/self/cgroup"], cgroup=cgroup)
    finally:
        os.rmdir(cgroup)
    assert f"patchgate-{os.getpid()}-test" in done.output
