"""The console acts by running doit commands, exactly as an operator would type them.

``python -m doit -f DODO -d PROJECT promote issue=ID operator=NAME``: the same task creators,
the same locks (the promotion lock, the issue locks), the same summary block; there is no
second implementation of any lifecycle here. Each run is a *job*: a subprocess in its own
process group whose output goes to ``patches/.state/ui/jobs/JOB.log``; the job page polls
its status (htmx) and shows the steps doit reports (``.  task``) and the output's tail.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..steps import STATE_DIR

JOBS_DIR = os.path.join(STATE_DIR, "ui", "jobs")
TAIL_LINES = 60
PLAN_TIMEOUT = 300.0
STEP_LINE = re.compile(r"^(\.|--|F|E)  (\S+)")
SUMMARY_KEY = re.compile(r"^([A-Z][A-Z_]*): (.*)$")


def doit_argv(dodo: str, root: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "doit", "-f", dodo, "-d", root, *args]


def summary_of(output: str) -> dict[str, str]:
    """The last summary block of a doit run's output (``RESULT: …`` and the lines after it)."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        found = SUMMARY_KEY.match(line)
        if found and found.group(1) == "RESULT":
            fields = {}
        if found and (fields or found.group(1) == "RESULT"):
            fields[found.group(1)] = found.group(2)
    return fields


@dataclass
class Job:
    id: str
    title: str
    args: tuple[str, ...]
    operator: str
    log: str
    started: float = field(default_factory=time.time)
    returncode: int | None = None
    finished: float | None = None
    pid: int = 0
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def command(self) -> str:
        return "doit " + shlex.join(self.args)

    @property
    def running(self) -> bool:
        return self.returncode is None

    def output(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def steps(self) -> list[tuple[str, str]]:
        """(mark, task) of each task doit reported: ``.`` ran, ``--`` up to date."""
        found = []
        for line in self.output().splitlines():
            match = STEP_LINE.match(line)
            if match:
                found.append((match.group(1), match.group(2)))
        return found

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def summary(self) -> dict[str, str]:
        return summary_of(self.output()) if not self.running else {}

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class Jobs:
    """Runs doit commands for the console; keeps every job of this console's lifetime."""

    def __init__(self, root: str, dodo: str) -> None:
        self.root = root
        self.dodo = dodo
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def folder(self) -> str:
        path = os.path.join(self.root, JOBS_DIR)
        os.makedirs(path, exist_ok=True)
        return path

    def start(self, title: str, args: Sequence[str], operator: str) -> Job:
        job_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)
        job = Job(
            job_id, title, tuple(args), operator, os.path.join(self.folder(), f"{job_id}.log")
        )
        with open(job.log, "wb") as out:  # the child keeps its own descriptor of it
            out.write(f"$ {job.command}\n".encode())
            out.flush()
            child = subprocess.Popen(
                doit_argv(self.dodo, self.root, args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        job.pid = child.pid
        with self._lock:
            self._jobs[job_id] = job
        threading.Thread(target=self._reap, args=(job, child), daemon=True).start()
        return job

    @staticmethod
    def _reap(job: Job, child: subprocess.Popen[bytes]) -> None:
        try:
            job.returncode = child.wait()
        finally:
            job.finished = time.time()
            job._done.set()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.started, reverse=True)

    def run(self, args: Sequence[str], timeout: float = PLAN_TIMEOUT) -> tuple[int, str]:
        """A short doit command (a rollback plan) run to its end: exit status and output."""
        child = subprocess.Popen(
            doit_argv(self.dodo, self.root, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            out, _ = child.communicate()
            return -1, out.decode("utf-8", "replace") + f"\n(stopped after {timeout:.0f} s)"
        return child.returncode, out.decode("utf-8", "replace")

    def stop_all(self) -> None:
        """When the console stops: the doit runs it started are interrupted (Ctrl-C)."""
        for job in self.all():
            if job.running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(job.pid, signal.SIGINT)
