"""The jail: every patch and gate runs in bubblewrap; the workspace is the only writable path.

What the jail sees (everything else of the host does not exist inside):

* read-only: /usr, /bin, /sbin, /lib*, /etc (minus what an ordinary user could not read there,
  e.g. /etc/shadow), the tool environment and ``jail_binds``, and the Python installation a
  virtual environment among them was made from (pyenv keeps it under /root; only that
  directory of /root is bound);
* writable: the workspace's ``repo/`` (``workdir``, unless ``workdir_readonly``),
  ``extra_writable``, and a private /tmp (HOME=/tmp) and /dev/shm, each sized like the memory
  cap; nothing else;
* hidden: the workdir's ``.git`` and ``hidden`` (patchgate's patches/ and audit/ when the
  workdir is the project folder itself): empty, read-only folders inside;
* fresh /proc and /dev, no network, its own pid namespace, hostname ``patchgate``; the
  host-global parts of /proc (``/proc/sys``, ``sysrq-trigger``, ...) read-only, and what only
  tells about the host (``kcore``, ``keys``, ``kmsg``, ...) hidden;
* a fresh, empty session keyring (the caller's keys are out of reach);
* one memory cgroup per step (processes and tmpfs pages together: ``max_memory_mb``) and one
  pids cgroup (``max_processes``), where cgroups can be made.

Inside, the process runs as ``uid``/``gid`` with no capabilities and cannot create user
namespaces. Run by root, that uid is host root for file ownership, so files the jail writes
are root's (git outside does not see "dubious ownership"); it is also why secrets are hidden by
not binding them rather than by permissions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import re
import resource
import shutil
import signal
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import proc
from .errors import PatchgateError

if TYPE_CHECKING:
    from .settings import Settings

MODES = ("bwrap", "none")
NONE_WARNING = "jail: none — patches and gates run unjailed"
INSTALL_FIX = "install it (apt-get install -y bubblewrap) or set jail: none in patchgate.yaml"
MISSING = f"bubblewrap (bwrap) is not installed; {INSTALL_FIX}"
NO_PROCESS_CAP = (
    "jail: max_processes is not enforced: no writable pids cgroup "
    "(as root, RLIMIT_NPROC does not apply); a fork bomb is stopped only by the step's timeout"
)
# System directories bound read-only at the same path; a symlink (merged /usr) stays a symlink.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
JAIL_HOME = "/tmp"
HOSTNAME = "patchgate"
PROBE_TIMEOUT = 15.0
MIB = 1024 * 1024
# Variables whose name says "credential" never enter a step, even when a caller passes them.
CREDENTIAL_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|(^|_)(API_?)?KEYS?($|_)", re.I)


@dataclass(frozen=True)
class JailSpec:
    mode: str  # "bwrap" | "none"
    workdir: str  # absolute path of the workspace's repo/: the only writable path (+ below)
    extra_writable: tuple[str, ...] = ()  # e.g. the workspace's cache dir for mypy
    readonly: tuple[str, ...] = ()  # tool env (a venv directory) and jail_binds, same path inside
    uid: int = 1000
    max_processes: int = 512
    max_memory_mb: int = 4096
    # A gate that only judges sees the workspace read-only: it cannot change what it judges.
    workdir_readonly: bool = False
    # Paths that lie under a bind but must not be seen (patchgate's own state when the workdir is
    # the project folder): each is an empty read-only folder inside. Nothing bound may be in one.
    hidden: tuple[str, ...] = ()
    # Issue 11 (build gates): a folder bound writable AT ``workdir`` instead of workdir itself,
    # e.g. a throwaway copy of it: the step sees the worktree at its own path and may write it,
    # and what it writes stays in the copy. None: workdir itself.
    workdir_source: str | None = None


# --- preflight -------------------------------------------------------------------------------


def bwrap_path() -> str:
    """bwrap as found on the current PATH, or the preflight error naming the fix."""
    found = shutil.which("bwrap", path=os.environ.get("PATH", os.defpath))
    if found is None:
        raise PatchgateError("PREFLIGHT", MISSING)
    return found


def preflight(mode: str) -> str | None:
    """Check that the jail can start; a warning line to show, or None.

    The probe starts a real (empty) jail once per process and bwrap binary.
    """
    if mode == "none":
        return NONE_WARNING
    if mode != "bwrap":
        raise PatchgateError(
            "PREFLIGHT", f"jail: {mode} is not one of {', '.join(MODES)}; pick one of them"
        )
    _probe(bwrap_path())
    warnings = []
    if _cgroup_parent() is None and os.geteuid() == 0:
        warnings.append(NO_PROCESS_CAP)
    if not memory_cap_available():
        warnings.append(NO_MEMORY_CAP)
    return "; ".join(warnings) or None


@functools.cache
def _probe(bwrap: str) -> None:
    """Start the hardened jail with nothing in it; raise, quoting bwrap, if it cannot start."""
    argv = [bwrap, *_base_args(1000, 64), "--remount-ro", "/", "--remount-ro", "/dev"]
    argv += ["--", "true"]
    done = proc.run(
        argv, env={"PATH": "/usr/bin:/bin"}, timeout=PROBE_TIMEOUT, output_cap=4096,
        new_keyring=True,
    )  # fmt: skip
    if done.returncode == 0:
        return
    if done.returncode == 127:
        raise PatchgateError("PREFLIGHT", MISSING)
    lines = [line.strip() for line in done.output.splitlines() if line.strip()]
    why = lines[-1] if lines else f"exit code {done.returncode}"
    if done.timed_out:
        why = f"no answer within {PROBE_TIMEOUT:.0f} s"
    raise PatchgateError(
        "PREFLIGHT",
        f"bubblewrap (bwrap) cannot start a jail here ({why}); {INSTALL_FIX}",
    )


# --- the command -----------------------------------------------------------------------------


def command(argv: Sequence[str], spec: JailSpec) -> list[str]:
    """The bwrap command line running ``argv`` jailed in ``spec.workdir``; "none": ``argv``."""
    if spec.mode == "none":
        return list(argv)
    if spec.mode != "bwrap":
        raise PatchgateError(
            "PREFLIGHT", f"jail: {spec.mode} is not one of {', '.join(MODES)}; pick one of them"
        )
    writable = [os.path.normpath(p) for p in (spec.workdir, *spec.extra_writable)]
    for path in writable:
        if not os.path.isabs(path):
            raise ValueError(f"jail: writable path {path} is not absolute")
        if path != writable[0] and contains(path, writable[0]):
            raise ValueError(f"jail: writable path {path} contains the workspace {writable[0]}")
    readonly = _readonly_paths(spec.readonly, writable)
    covers = _tmp_covers([*readonly, *writable])
    args = [bwrap_path(), *_base_args(_jail_uid(spec), spec.max_memory_mb)]
    # All after the /tmp tmpfs, so paths under /tmp (a venv, a test's workspace) show through.
    for path in covers:
        args += ["--tmpfs", path]
    for path in writable:
        ro = spec.workdir_readonly and path == writable[0]
        source = spec.workdir_source if path == writable[0] and spec.workdir_source else path
        args += ["--ro-bind" if ro else "--bind", source, path]
    for path in readonly:  # after the writable ones: a read-only path is never shadowed
        args += ["--ro-bind", path, path]
    args += _git_mask(writable[0])
    args += _hidden_masks(spec.hidden, [*writable, *readonly])
    # bwrap's own root tmpfs holds the mount points: read-only, so `../` is not writable and
    # the root is no unbounded memory sink.
    for path in ("/", "/dev", *covers):
        args += ["--remount-ro", path]
    args += ["--chdir", writable[0], "--", *argv]
    return args


def _tmp_covers(paths: Sequence[str]) -> list[str]:
    """Directories directly under /tmp that hold a bind point deeper down.

    Their mount points would otherwise sit in the writable /tmp: a read-only tmpfs there keeps
    `../` of a workspace under /tmp as unwritable as anywhere else.
    """
    covers: list[str] = []
    for path in paths:
        rel = os.path.relpath(path, "/tmp")
        parts = rel.split(os.sep)
        if rel.startswith("..") or len(parts) < 2:
            continue
        top = os.path.join("/tmp", parts[0])
        if top not in paths and top not in covers:
            covers.append(top)
    return covers


def _jail_uid(spec: JailSpec) -> int:
    # Only root can choose; anyone else is mapped to their own uid.
    return spec.uid if os.geteuid() == 0 else os.geteuid()


def _base_args(uid: int, max_memory_mb: int) -> list[str]:
    # As root, bwrap without --unshare-user --uid N --cap-drop ALL --disable-userns keeps its
    # capabilities inside and `mount -o remount,rw /` works (measured: notes/machine.md).
    return [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid", str(uid),
        "--gid", str(uid),
        "--cap-drop", "ALL",
        "--new-session",
        "--die-with-parent",
        "--hostname", HOSTNAME,
        *_system_args(),
        "--proc", "/proc",
        *_proc_guards(),
        "--dev", "/dev",
        # Memory-backed scratch, each capped like a process; /dev itself becomes read-only.
        "--size", str(max_memory_mb * MIB),
        "--tmpfs", "/dev/shm",
        "--size", str(max_memory_mb * MIB),
        "--tmpfs", "/tmp",
    ]  # fmt: skip


# Kernel settings and other host-global /proc files: the jail's uid is host root for file
# access, so /proc/sys/kernel/core_pattern would be writable (a way to run code as host root).
# Read-only as Docker's defaults have them, and the rest hidden (issue 12).
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs", "pressure", "mtrr", "sysvipc")
PROC_HIDDEN = (
    "kcore", "keys", "key-users", "kmsg", "kallsyms", "kpagecount", "kpageflags", "kpagecgroup",
    "latency_stats", "timer_list", "timer_stats", "sched_debug", "acpi", "asound", "scsi",
)  # fmt: skip


@functools.cache
def _proc_guards() -> tuple[str, ...]:
    """bwrap arguments, after ``--proc /proc``, making the host-global parts of /proc read-only
    (bound from the host's /proc: sysctls read through it still answer for the reader's own
    namespaces) and hiding those that only tell about the host."""
    args: list[str] = []
    for name in PROC_READONLY:
        path = f"/proc/{name}"
        if os.path.lexists(path):
            args += ["--ro-bind", path, path]
    for name in PROC_HIDDEN:
        path = f"/proc/{name}"
        if os.path.isdir(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.lexists(path):
            args += ["--ro-bind", "/dev/null", path]
    return tuple(args)


@functools.cache
def _system_args() -> tuple[str, ...]:
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return (*args, *_unreadable_masks("/etc"))


def _unreadable_masks(top: str) -> list[str]:
    """Cover what an ordinary user could not read under ``top``.

    The jail's uid is host root for file ownership, so owner-only files (/etc/shadow, ssh host
    keys, ssl/private) would be readable: files become /dev/null, directories an empty tmpfs.
    """
    masks: list[str] = []
    try:
        entries = list(os.scandir(top))
    except OSError:
        return masks
    for entry in sorted(entries, key=lambda e: e.name):
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            if mode & 0o005 != 0o005:
                masks += ["--tmpfs", entry.path, "--remount-ro", entry.path]
            else:
                masks += _unreadable_masks(entry.path)
        elif stat.S_ISREG(mode) and not mode & stat.S_IROTH:
            masks += ["--ro-bind", "/dev/null", entry.path]
    return masks


def contains(outer: str, inner: str) -> bool:
    """``inner`` is ``outer`` or lies in it, symlinks resolved."""
    outer, inner = os.path.realpath(outer), os.path.realpath(inner)
    return os.path.commonpath([outer, inner]) == outer


def _readonly_paths(readonly: Sequence[str], writable: Sequence[str]) -> list[str]:
    paths: list[str] = []
    for given in readonly:
        path = os.path.normpath(given)
        if not os.path.isabs(path):
            raise PatchgateError(
                "PREFLIGHT",
                f"jail: {path} (tool_env or jail_binds) is not an absolute path; write it from /",
            )
        if not os.path.exists(path):
            raise PatchgateError(
                "PREFLIGHT",
                f"jail: {path} (tool_env or jail_binds) does not exist; "
                "fix the path in patchgate.yaml",
            )
        paths.append(path)
        prefix = _interpreter_prefix(path)
        if prefix is not None:
            paths.append(prefix)
    paths = list(dict.fromkeys(paths))
    for path in paths:
        for inner in writable:
            if contains(path, inner):
                raise PatchgateError(
                    "PREFLIGHT",
                    f"jail: the read-only bind {path} contains the workspace {inner} and would "
                    "expose the live repository and patchgate's state; "
                    "bind a narrower path in jail_binds",
                )
    return paths


def _interpreter_prefix(venv: str) -> str | None:
    """The installation a virtual environment was made from (``home =`` in pyvenv.cfg, one up)."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home" and os.path.isabs(value.strip()):
            return os.path.dirname(os.path.normpath(value.strip()))
    return None


def _git_mask(workdir: str) -> list[str]:
    """Hide the workspace's git metadata, read-only.

    A worktree's ``.git`` is a file pointing into the live repository's ``.git``: inside it is
    /dev/null, so a patch can neither read where the gitdir is nor rewrite the pointer; git then
    works as outside any repository (GIT_CEILING_DIRECTORIES stops the search at ``workdir``).
    A ``.git`` directory (hooks, config that git outside would run) becomes an empty read-only dir.
    """
    dotgit = os.path.join(workdir, ".git")
    if os.path.islink(dotgit):
        return []
    if os.path.isfile(dotgit):
        return ["--ro-bind", "/dev/null", dotgit]
    if os.path.isdir(dotgit):
        return ["--tmpfs", dotgit, "--remount-ro", dotgit]
    return []


def _hidden_masks(hidden: Sequence[str], bound: Sequence[str]) -> list[str]:
    """An empty read-only folder (a file: /dev/null) wherever a bind would show a hidden path.

    Compared by real path, so a symlink to a hidden folder leads to the mask too. A hidden path
    that does not exist, or lies under no bind, is not in the jail anyway; one that holds a
    bound path (the workdir, a cache, a jail_binds entry) is refused: it cannot be both.
    """
    masks: list[str] = []
    for given in hidden:
        real = os.path.realpath(given)
        for path in bound:
            if contains(real, path):
                raise PatchgateError(
                    "PREFLIGHT",
                    f"jail: {path} lies in {given}, which the jail hides (patchgate's own "
                    "state); use a path outside it",
                )
        if not os.path.lexists(real):
            continue
        for path in bound:
            host = os.path.realpath(path)
            if not contains(host, real):
                continue
            inside = os.path.join(path, os.path.relpath(real, host))
            if os.path.isdir(real):
                masks += ["--tmpfs", inside, "--remount-ro", inside]
            else:
                masks += ["--ro-bind", "/dev/null", inside]
    return masks


def jail_env(env: Mapping[str, str], spec: JailSpec) -> dict[str, str]:
    """proc.clean_env plus ``env``, minus anything named like a credential."""
    full = proc.clean_env()
    if spec.mode == "bwrap":
        full.update(
            HOME=JAIL_HOME,
            TMPDIR=JAIL_HOME,
            GIT_CEILING_DIRECTORIES=os.path.dirname(os.path.normpath(spec.workdir)),
        )
    full.update(env)
    return {k: v for k, v in full.items() if not CREDENTIAL_NAME.search(k)}


# --- running ---------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    spec: JailSpec,
    *,
    env: Mapping[str, str],
    timeout: float,
    output_cap: int,
    input_bytes: bytes | None = None,
) -> proc.Completed:
    """Run ``argv`` in the jail with cwd ``spec.workdir``.

    ``env`` holds the step's own variables (e.g. a gate's ``env:``), layered on the allowlist.
    On return, nothing the step started is still running.
    """
    cmd = command(argv, spec)
    full_env = jail_env(env, spec)
    if spec.mode == "none":
        return proc.run(
            cmd, cwd=spec.workdir_source or spec.workdir, env=full_env, timeout=timeout,
            input_bytes=input_bytes, output_cap=output_cap,
        )  # fmt: skip
    limits = {
        resource.RLIMIT_AS: spec.max_memory_mb * MIB,  # per process; 64 GiB -> MemoryError
        resource.RLIMIT_CORE: 0,  # no core files in the workspace
    }
    with (
        _process_cap(spec.max_processes) as cgroup,
        _memory_cap(spec.max_memory_mb, cgroup) as memory,
    ):
        if cgroup is None:
            # Effective only when not root: the kernel exempts uid 0, which the jail's uid is.
            limits[resource.RLIMIT_NPROC] = spec.max_processes
        done = proc.run(
            cmd, cwd=spec.workdir, env=full_env, timeout=timeout, input_bytes=input_bytes,
            output_cap=output_cap, limits=limits, new_keyring=True,
            cgroup=tuple(c for c in (cgroup, memory) if c is not None),
        )  # fmt: skip
        if oom_killed(memory or cgroup):
            done = dataclasses.replace(
                done, output=done.output + OOM_MARKER.format(mb=spec.max_memory_mb)
            )
        return done


# --- the process cap -------------------------------------------------------------------------
#
# RLIMIT_NPROC does not stop a fork bomb here: run by root, the jail's uid maps to host uid 0,
# and the kernel never applies RLIMIT_NPROC to uid 0's processes (measured: 200 forks with a
# limit of 50). What works is a pids cgroup (v1 `pids` hierarchy or v2 with the pids controller):
# the child joins a fresh cgroup with pids.max before it execs bwrap, so every process of the
# jail counts, and nothing inside can leave it (no /sys, no capabilities). The cgroup also lists
# what is left to kill when the step ends. Cost: ~12 ms per step (the kernel's first move into a
# cgroup builds its css_set; reusing an idle cgroup does not help, that set is freed within ~30 ms).
# Without a usable pids cgroup, RLIMIT_NPROC is the fallback: it works when patchgate is not root.

_cgroup_names = itertools.count()


@contextlib.contextmanager
def _process_cap(max_processes: int) -> Iterator[str | None]:
    parent = _cgroup_parent()
    if parent is None:
        yield None
        return
    path = os.path.join(parent, f"patchgate-{os.getpid()}-{next(_cgroup_names)}")
    os.mkdir(path)
    try:
        with open(os.path.join(path, "pids.max"), "w", encoding="ascii") as fh:
            fh.write(str(max_processes))
        yield path
    finally:
        _empty_and_remove(path)


def _empty_and_remove(path: str, patience: float = 5.0) -> None:
    """SIGKILL whatever is left in the cgroup, then remove it."""
    deadline = time.monotonic() + patience
    while True:
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as fh:
                pids = [int(p) for p in fh.read().split()]
        except FileNotFoundError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            with contextlib.suppress(OSError):  # exiting processes still count for a moment
                os.rmdir(path)
                return
        if time.monotonic() > deadline:
            return  # left behind: a later sweep removes it once empty
        time.sleep(0.005)


@functools.cache
def _cgroup_parent() -> str | None:
    """A cgroup directory under which we can create children with pids.max, or None."""
    for candidate in _cgroup_candidates():
        probe = os.path.join(candidate, f"patchgate-{os.getpid()}-probe")
        try:
            os.mkdir(probe)
        except OSError:
            continue
        usable = os.path.exists(os.path.join(probe, "pids.max"))
        with contextlib.suppress(OSError):
            os.rmdir(probe)
        if usable:
            _sweep(candidate)
            return candidate
    return None


def _cgroup_candidates(controller: str = "pids") -> list[str]:
    """Our own ``controller`` cgroup, then the hierarchy's root (v1 first, then v2)."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            own = [line.rstrip("\n").split(":", 2) for line in fh]
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return []
    found: list[str] = []
    for version in (1, 2):
        for fields in mounts:
            if "-" not in fields[6:]:
                continue
            sep = fields.index("-", 6)
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            if not (version == 1 and fstype == "cgroup" and controller in options) and not (
                version == 2 and fstype == "cgroup2"
            ):
                continue
            root, mountpoint = fields[3], fields[4]
            for _, controllers, path in (entry for entry in own if len(entry) == 3):
                mine = controller in controllers.split(",") if version == 1 else controllers == ""
                if mine and os.path.commonpath([root, path]) == root:
                    found.append(os.path.join(mountpoint, os.path.relpath(path, root)))
            found.append(mountpoint)
    return list(dict.fromkeys(os.path.normpath(p) for p in found))


# --- the memory cap (issue 12) ---------------------------------------------------------------
#
# RLIMIT_AS bounds one process's address space, not a step: 7 processes of 256 MiB each, plus
# files in the jail's tmpfs /tmp and /dev/shm (memory that no process maps), held 2.2 GiB under a
# 256 MiB cap. A memory cgroup counts all of it: every process of the jail and the tmpfs pages
# they write are charged to it, and past ``max_memory_mb`` the kernel's OOM killer ends the step
# (v2: memory.max in the step's cgroup; v1: a cgroup of its own in the memory hierarchy, which
# the child joins before exec like the pids one). Swap is capped too where the kernel has it.

NO_MEMORY_CAP = (
    "jail: max_memory_mb bounds each process only: no writable memory cgroup, so a step's "
    "processes and its tmpfs together can use more (run patchgate where it may create cgroups)"
)
OOM_MARKER = (
    "\n[patchgate: the step used its whole memory cap (max_memory_mb: {mb}) and the kernel "
    "killed it]\n"
)


@functools.cache
def _memory_parent() -> str | None:
    """A cgroup directory whose new children have a memory limit file, or None."""
    for candidate in _cgroup_candidates("memory"):
        probe = os.path.join(candidate, f"patchgate-{os.getpid()}-probe")
        try:
            os.mkdir(probe)
        except OSError:
            continue
        usable = _memory_limit_file(probe) is not None
        with contextlib.suppress(OSError):
            os.rmdir(probe)
        if usable:
            _sweep(candidate)
            return candidate
    return None


def _memory_limit_file(cgroup: str) -> str | None:
    for name in ("memory.max", "memory.limit_in_bytes"):
        if os.path.exists(os.path.join(cgroup, name)):
            return name
    return None


@contextlib.contextmanager
def _memory_cap(max_memory_mb: int, joined: str | None) -> Iterator[str | None]:
    """Bound the step's memory; yields a further cgroup the child must join (v1), or None.

    ``joined`` is the step's pids cgroup: on v2 with the memory controller it takes the limit
    itself (a process is in one v2 cgroup only).
    """
    limit = str(max_memory_mb * MIB)
    name = _memory_limit_file(joined) if joined is not None else None
    if joined is not None and name is not None:  # v2, or v1 with pids and memory co-mounted
        _write_limits(joined, {name: limit, _SWAP[name]: _swap_value(name, limit)})
        yield None
        return
    parent = _memory_parent()
    if parent is None or parent == _cgroup_parent():
        yield None  # v2 without memory in the pids cgroup: no second cgroup possible
        return
    path = os.path.join(parent, f"patchgate-{os.getpid()}-{next(_cgroup_names)}")
    os.mkdir(path)
    try:
        name = _memory_limit_file(path) or "memory.limit_in_bytes"
        _write_limits(path, {name: limit, _SWAP[name]: _swap_value(name, limit)})
        yield path
    finally:
        _empty_and_remove(path)


# v2 counts swap apart (none allowed); v1's memsw counts memory + swap (the same cap).
_SWAP = {"memory.max": "memory.swap.max", "memory.limit_in_bytes": "memory.memsw.limit_in_bytes"}


def _swap_value(name: str, limit: str) -> str:
    return "0" if name == "memory.max" else limit


def _write_limits(cgroup: str, values: Mapping[str, str]) -> None:
    """Write each limit; the first is required, the others (swap) where the kernel has them."""
    for n, (name, value) in enumerate(values.items()):
        try:
            with open(os.path.join(cgroup, name), "w", encoding="ascii") as fh:
                fh.write(value)
        except OSError:
            if n == 0:
                raise


def oom_killed(cgroup: str | None) -> bool:
    """The kernel's OOM killer ended a process of ``cgroup`` (its memory cap was reached)."""
    if cgroup is None:
        return False
    for name in ("memory.events", "memory.oom_control"):
        try:
            with open(os.path.join(cgroup, name), encoding="ascii") as fh:
                fields = dict(line.split()[:2] for line in fh if len(line.split()) >= 2)
        except OSError:
            continue
        return int(fields.get("oom_kill", "0")) > 0
    return False


def memory_cap_available() -> bool:
    """A step's memory (all its processes and its tmpfs) can be bounded here."""
    pids = _cgroup_parent()
    if pids is not None:
        probe = os.path.join(pids, f"patchgate-{os.getpid()}-memprobe")
        with contextlib.suppress(OSError):
            os.mkdir(probe)
            try:
                if _memory_limit_file(probe) is not None:
                    return True
            finally:
                os.rmdir(probe)
    parent = _memory_parent()
    return parent is not None and parent != pids


def _sweep(parent: str) -> None:
    """Remove cgroups left by patchgate processes that died before cleaning up."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            owner = name.split("-")
            if len(owner) != 3 or owner[0] != "patchgate" or not owner[1].isdigit():
                continue
            try:
                os.kill(int(owner[1]), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(parent, name))
            except PermissionError:
                pass


# --- a step's jail, from the settings (apply's patch run, the gates, the live gates) ----------


def jail_spec(
    settings: Settings,
    workdir: str,
    readonly: Sequence[str] = (),
    *,
    writable: Sequence[str] = (),
    workdir_readonly: bool = False,
    workdir_source: str | None = None,
    hidden: Sequence[str] = (),
) -> JailSpec:
    """The jail of a step in ``workdir``: the settings' mode and limits, tool_env and jail_binds
    read-only (plus ``readonly``), ``writable`` besides the workdir (a gate's own folder)."""
    return JailSpec(
        mode=settings.jail,
        workdir=workdir,
        extra_writable=tuple(writable),
        readonly=(settings.tool_env, *settings.jail_binds, *readonly),
        uid=settings.jail_uid,
        max_processes=settings.max_processes,
        max_memory_mb=settings.max_memory_mb,
        workdir_readonly=workdir_readonly,
        hidden=tuple(hidden),
        workdir_source=workdir_source,  # issue 11: a build gate's copy
    )


def step_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A step's own variables: ``extra`` (a gate's env), tool_env's bin/ first on PATH, no
    bytecode, HOME=/tmp. run() layers them on jail_env's allowlist."""
    env = proc.clean_env(extra)
    env["PATH"] = f"{settings.tool_env}/bin:/usr/local/bin:/usr/bin:/bin"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HOME"] = "/tmp"
    return env


def run_jailed(
    settings: Settings,
    workdir: str,
    argv: Sequence[str],
    *,
    timeout: float,
    readonly: Sequence[str] = (),
    env: dict[str, str] | None = None,
    writable: Sequence[str] = (),
    workdir_readonly: bool = False,
    workdir_source: str | None = None,
    hidden: Sequence[str] = (),
) -> proc.Completed:
    """Run ``argv`` in the jail of jail_spec, with step_env's variables and the output cap."""
    spec = jail_spec(
        settings,
        workdir,
        readonly,
        writable=writable,
        workdir_readonly=workdir_readonly,
        workdir_source=workdir_source,
        hidden=hidden,
    )
    return run(
        argv,
        spec,
        env=step_env(settings, env),
        timeout=timeout,
        output_cap=int(settings.output_cap_mb * MIB),
    )
