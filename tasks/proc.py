"""Every external command goes through ``run``: argv tuple, timeout, capped output, clean env."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import platform
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

# Variables a child may inherit from the caller; everything else (tokens, keys) stays out.
ENV_ALLOWLIST = ("PATH", "HOME", "USER", "LOGNAME", "TERM", "TMPDIR")
# Pinned so a verdict does not drift between runs or machines.
PINNED_ENV = {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
DEFAULT_OUTPUT_CAP = 10 * 1024 * 1024
TRUNCATION_MARKER = "\n[patchgate: output truncated after {cap} bytes; {dropped} bytes dropped]\n"


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    output: str
    duration: float
    timed_out: bool = False
    truncated: bool = False


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's allowlisted variables, the pinned ones, then ``extra``."""
    env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    env.update(PINNED_ENV)
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# keyctl(2) by architecture, for a fresh session keyring (issue 12): no libc wrapper in Python.
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "i686": 288, "armv7l": 311, "ppc64le": 271}
KEYCTL_JOIN_SESSION_KEYRING = 1


@functools.cache
def _keyctl() -> Callable[[], int] | None:
    """A call joining a new anonymous session keyring, or None where keyctl is unknown."""
    number = SYS_KEYCTL.get(platform.machine())
    if number is None:
        return None
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    return functools.partial(syscall, number, KEYCTL_JOIN_SESSION_KEYRING, None)


def new_session_keyring_available() -> bool:
    return _keyctl() is not None


def _child_setup(
    limits: Mapping[int, int] | None, cgroups: Sequence[str], new_keyring: bool = False
) -> Callable[[], None] | None:
    """What the child does between fork and exec: join a new session keyring (``new_keyring``:
    the caller's keys, e.g. Kerberos tickets, out of reach), join ``cgroups``, set ``limits``.

    Only C-level calls and a small write: safe enough after fork even with other threads.
    """
    if not limits and not cgroups and not new_keyring:
        return None
    items = tuple((limits or {}).items())
    join = _keyctl() if new_keyring else None  # looked up before the fork

    def setup() -> None:
        # ENOSYS: a kernel without keyrings has none to share.
        if join is not None and join() < 0 and ctypes.get_errno() != errno.ENOSYS:
            raise OSError(ctypes.get_errno(), "cannot join a new session keyring")
        for cgroup in cgroups:
            with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as fh:
                fh.write("0")  # 0: the writing process itself
        for res, value in items:
            resource.setrlimit(res, (value, value))

    return setup


def _expire(proc: subprocess.Popen[bytes], expired: threading.Event) -> None:
    expired.set()
    _kill_group(proc)


def _drain(stream: IO[bytes], cap: int | None, sink: list[bytes], dropped: list[int]) -> None:
    """Keep the first ``cap`` bytes, count the rest: a child printing without end fills nothing.

    ``cap`` None keeps everything: for output that is data (git plumbing), never a step's log.
    """
    kept = 0
    if cap is None:
        sink.extend(iter(lambda: os.read(stream.fileno(), 1 << 20), b""))
        return
    for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
        room = cap - kept
        if room > 0:
            sink.append(chunk[:room])
            kept += min(room, len(chunk))
        dropped[0] += max(0, len(chunk) - max(room, 0))


def run(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input_bytes: bytes | None = None,
    output_cap: int | None = DEFAULT_OUTPUT_CAP,
    limits: Mapping[int, int] | None = None,
    cgroup: str | Sequence[str] | None = None,
    new_keyring: bool = False,
) -> Completed:
    """Run ``argv`` in its own process group; on timeout kill the whole group.

    stdout and stderr are merged; at most ``output_cap`` bytes are kept, then a marker
    (``None``: all of it, for output that is data).
    ``limits`` maps ``resource.RLIMIT_*`` to a value set (soft and hard) in the child before
    exec; ``cgroup`` is a cgroup directory (or several: v1 hierarchies) the child joins first
    (see ``patchgate.jail``);
    ``new_keyring``: the child gets a fresh session keyring, not the caller's.
    """
    argv = tuple(argv)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(
                limits, (cgroup,) if isinstance(cgroup, str) else tuple(cgroup or ()), new_keyring
            ),
        )
    except FileNotFoundError:
        return Completed(argv, 127, f"{argv[0]}: command not found\n", 0.0)
    except PermissionError as exc:
        return Completed(argv, 126, f"{argv[0]}: {exc.strerror}\n", 0.0)
    except OSError as exc:  # E2BIG: argument list too long, said as what it is
        return Completed(argv, 126, f"{argv[0]}: cannot start: {exc.strerror}\n", 0.0)
    except subprocess.SubprocessError as exc:  # the child's set-up (keyring, cgroup) failed
        return Completed(argv, 126, f"{argv[0]}: cannot start: {exc}\n", 0.0)
    assert proc.stdout is not None
    sink: list[bytes] = []
    dropped = [0]
    reader = threading.Thread(target=_drain, args=(proc.stdout, output_cap, sink, dropped))
    reader.start()
    # A timer kills the group: Popen.wait(timeout) polls with sleeps of up to 50 ms, which
    # every short command (git, a jailed step) would pay on top of its own run time.
    expired = threading.Event()
    timer = threading.Timer(timeout, _expire, (proc, expired)) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        if input_bytes is not None and proc.stdin is not None:
            with proc.stdin:
                proc.stdin.write(input_bytes)
        proc.wait()
    except BaseException:  # Ctrl-C: take the children down with us
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        # Grandchildren left behind (a daemonised writer) must not outlive the step.
        _kill_group(proc)
        proc.wait()
        reader.join()
        proc.stdout.close()
    timed_out = expired.is_set()
    output = b"".join(sink).decode("utf-8", errors="replace")
    if dropped[0]:
        output += TRUNCATION_MARKER.format(cap=output_cap, dropped=dropped[0])
    return Completed(
        argv,
        -9 if timed_out else proc.returncode,
        output,
        time.monotonic() - start,
        timed_out=timed_out,
        truncated=bool(dropped[0]),
    )
