"""Run logs, patches/latest.log, and the summary block that ends every top-level command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from doit.exceptions import BaseFail, TaskError, UnmetDependency
from doit.reporter import ConsoleReporter

LOGS_DIR = os.path.join("patches", "logs")
LATEST_LOG = os.path.join("patches", "latest.log")
# One stamp per doit process: every log of this run carries it.
RUN_STAMP = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


# What every run log starts with (issue 11): the effective configuration of this run, secrets
# redacted (config.log_header), registered once per project folder when the command line's
# configuration is loaded. A log written to for the first time begins with it.
_HEADERS: dict[str, str] = {}


def set_header(root: str, text: str) -> None:
    _HEADERS.setdefault(os.path.abspath(root), text if text.endswith("\n") else text + "\n")


def _header_for(path: str) -> str:
    if not _HEADERS or os.path.exists(path):
        return ""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    return _HEADERS.get(root, "")


def log_path(root: str, name: str) -> str:
    return os.path.join(root, LOGS_DIR, f"{RUN_STAMP}_{name}.log")


def log(path: str, text: str) -> None:
    """Append ``text`` to a run log (created on first use); every step writes its output here.

    A write that fails (disk full) is taken back whole before the error goes up: the log never
    ends in half an entry, and the space the failed write took is free again.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = _header_for(path) + text
    data = (text if text.endswith("\n") else text + "\n").encode("utf-8", errors="replace")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise OSError(exc.errno, exc.strerror, path) from exc
    finally:
        os.close(fd)


def try_log(path: str, text: str) -> str | None:
    """``log``, for when a failing log must not stop anything: the error, or None."""
    try:
        log(path, text)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def point_latest(root: str, path: str) -> None:
    """patches/latest.log -> the newest log, replaced atomically."""
    link = os.path.join(root, LATEST_LOG)
    tmp = f"{link}.{os.getpid()}.tmp"
    try:
        os.symlink(os.path.relpath(path, os.path.dirname(link)), tmp)
        os.replace(tmp, link)
    except OSError:
        if os.path.lexists(tmp):
            os.unlink(tmp)


# What may not reach the summary block as it is: it ends a line (also to str.splitlines:
# \x1c-\x1e, \x85, \u2028, \u2029) or drives the terminal.
LINE_BREAKERS = {"\u2028", "\u2029"}
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(value: str) -> str:
    """``value`` with every control character written as an escape (``\\n``, ``\\x1b``): a file
    named ``x\\nRESULT: FAIL`` cannot add a line to the summary block."""
    if value.isprintable():
        return value
    return "".join(
        _escaped(ch) if unicodedata.category(ch) == "Cc" or ch in LINE_BREAKERS else ch
        for ch in value
    )


def _escaped(ch: str) -> str:
    if ch in NAMED_ESCAPES:
        return NAMED_ESCAPES[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def summary_lines(fields: dict[str, str]) -> list[str]:
    """The block's ``KEY: value`` lines, in order; every value one line (see one_line)."""
    order = ("RESULT", "STAGE", "REASON", "FILES", "COMMIT", "PUSH", "WARNING")
    keys = [k for k in order if k in fields]
    keys += [k for k in fields if k not in order and k != "LOG"] + ["LOG"] * ("LOG" in fields)
    return [f"{k}: {one_line(fields[k])}" for k in keys]


@dataclass
class Group:
    """What one top-level unit (an issue's verify chain, an audit) did in this run."""

    name: str
    root: str
    log: str
    summary_file: str | None = None
    summary: dict[str, str] | None = None
    warning: str | None = None
    failure: tuple[str, str] | None = None
    detail: str | None = None
    executed: list[str] = field(default_factory=list)


def _interrupted(signum: int, frame: Any) -> None:
    raise SystemExit(130)


def failure_reason(exc: BaseFail) -> str:
    if isinstance(exc, TaskError):
        # A bug, not bad input: one line here, the traceback in the log.
        lines = [ln for ln in exc.get_msg().splitlines() if ln.strip()]
        return f"internal error: {lines[-1].strip() if lines else exc}; see the log and report it"
    return exc.get_msg().strip().splitlines()[0] if exc.get_msg().strip() else "failed"


class SummaryReporter(ConsoleReporter):  # type: ignore[misc]
    """Progress lines as doit prints them; instead of tracebacks, the summary block."""

    desc = "progress lines, then patchgate's summary block"

    def __init__(self, outstream: IO[str], options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self.groups: dict[str, Group] = {}
        self.running: Any = None  # the task started and not finished: set when interrupted
        # Ctrl-C ends the run as SystemExit(130): every ``finally`` and ``except BaseException``
        # on the way undoes what it must, doit saves what succeeded, this reporter says where
        # it stopped, and Python exits without a KeyboardInterrupt traceback.
        with contextlib.suppress(ValueError):  # not the main thread: leave Ctrl-C alone
            signal.signal(signal.SIGINT, _interrupted)

    def _group(self, task: Any) -> Group | None:
        meta = task.meta or {}
        if "group" not in meta:
            return None
        group = self.groups.get(meta["group"])
        if group is None:
            group = Group(meta["group"], meta["root"], meta["log"], warning=meta.get("warning"))
            self.groups[group.name] = group
        if meta.get("summary"):
            group.summary_file = meta["summary"]
        return group

    def execute_task(self, task: Any) -> None:
        if task.name.startswith("_"):  # patchgate's internal setup tasks: no progress line
            return
        super().execute_task(task)
        self.running = task
        group = self._group(task)
        if group is not None:
            hook = task.meta.get("before_first_step")
            if not group.executed and hook:
                func, args = hook  # a module-level function and its args: meta is pickled
                func(*args)
            group.executed.append(task.name)

    def skip_uptodate(self, task: Any) -> None:
        super().skip_uptodate(task)
        self._group(task)

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        self.running = None
        group = self._group(task)
        if group is not None and isinstance(task.result, dict) and "summary" in task.result:
            group.summary = {k: str(v) for k, v in task.result["summary"].items()}

    def add_failure(self, task: Any, exception: BaseFail) -> None:
        self.failures.append({"task": task, "exception": exception})
        self.running = None
        group = self._group(task)
        if group is None or group.failure is not None or isinstance(exception, UnmetDependency):
            return
        stage = getattr(exception, "stage", None) or task.meta.get("stage", "INTERNAL")
        group.failure = (stage, failure_reason(exception))
        if isinstance(exception, TaskError):
            group.detail = exception.get_msg()

    def runtime_error(self, msg: str) -> None:
        reason = msg.strip().splitlines()[-1]
        self.write(
            "\n".join(summary_lines({"RESULT": "FAIL", "STAGE": "PREFLIGHT", "REASON": reason}))
            + "\n"
        )

    def complete_run(self) -> None:
        if self.running is not None:  # Ctrl-C (or a kill signal turned into an exit) mid-step
            group = self._group(self.running)
            if group is not None and group.failure is None:
                group.failure = (
                    self.running.meta.get("stage", "INTERNAL"),
                    f"interrupted during {self.running.name}; nothing half-done is kept: "
                    "run the same command again to pick up where it stopped",
                )
        for group in self.groups.values():
            fields = self._fields(group)
            text = "\n".join(summary_lines(fields))
            unwritten = try_log(group.log, f"{group.detail}\n{text}" if group.detail else text)
            if unwritten:
                fields["LOG"] += f" (not written: {unwritten})"
                text = "\n".join(summary_lines(fields))
            self.write("\n" + text + "\n")
            if not unwritten:
                point_latest(group.root, group.log)
        if len(self.groups) > 1:
            failed = sum(1 for g in self.groups.values() if self._fields(g)["RESULT"] == "FAIL")
            self.write(f"\n{len(self.groups) - failed} passed, {failed} failed\n")
        sys.stdout.flush()

    def _fields(self, group: Group) -> dict[str, str]:
        fields: dict[str, str] = {}
        if group.failure is not None:
            fields = {"RESULT": "FAIL", "STAGE": group.failure[0], "REASON": group.failure[1]}
        elif group.summary is not None:
            fields = dict(group.summary)
        else:
            fields = read_summary(group.summary_file)
        if group.warning:
            fields["WARNING"] = group.warning
        fields["LOG"] = os.path.relpath(group.log, group.root)
        return fields


def read_summary(path: str | None) -> dict[str, str]:
    """The summary a chain's final step wrote into its result file (key ``summary``)."""
    if path is None or not os.path.exists(path):
        return {"RESULT": "FAIL", "STAGE": "INTERNAL", "REASON": "the run produced no result file"}
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return {k: str(v) for k, v in data.get("summary", {}).items()}
