"""The jail: each escape attempt fails inside and leaves the host as it was. Real bwrap and git."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import select
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from patchgate import jail, proc
from patchgate.errors import PatchgateError

PYTHON = sys.executable
TOKEN_VALUES = {"GITHUB_TOKEN": "ghp_fake_caller_token", "PATCHGATE_PUSH_TOKEN": "fake-push-token"}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


@dataclasses.dataclass(frozen=True)
class World:
    project: Path  # the live repository, with patchgate's patches/ and audit/ in it
    workdir: Path  # <project>/patches/workspaces/issue_1/repo, a git worktree of live
    cache: Path  # the workspace's cache dir: writable as extra_writable
    outside: Path  # a host directory nobody binds
    spec: jail.JailSpec

    def run(
        self, code: str, *, timeout: float = 10.0, output_cap: int = 1 << 20, **spec: Any
    ) -> proc.Completed:
        """Run a small python script in the jail."""
        return jail.run(
            [PYTHON, "-c", textwrap.dedent(code)],
            dataclasses.replace(self.spec, **spec),
            env={},
            timeout=timeout,
            output_cap=output_cap,
        )


def tree_snapshot(top: Path) -> dict[str, tuple[int, float, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime, p.stat().st_mode)
        for p in sorted(top.rglob("*"))
        if not p.is_symlink()
    }


@pytest.fixture(scope="module", autouse=True)
def bwrap_available() -> None:
    try:
        jail.preflight("bwrap")
    except PatchgateError as exc:
        pytest.fail(f"the jail tests need a working bubblewrap (CI installs it): {exc}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("jail")
    project = base / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    git(project, "config", "user.email", "t@example.com")
    git(project, "config", "user.name", "t")
    git(project, "config", "gc.auto", "0")
    (project / "module.py").write_text("VALUE = 1\n")
    (project / ".gitignore").write_text("patches/\naudit/\n.env\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "base")
    (project / ".env").write_text("LIVE-ONLY-SECRET\n")
    for state in ("patches", "audit"):
        (project / state).mkdir()
        (project / state / "sentinel.txt").write_text(f"{state}-sentinel\n")
    workspace = project / "patches" / "workspaces" / "issue_1"
    workspace.mkdir(parents=True)
    git(project, "worktree", "add", "-q", str(workspace / "repo"))
    (workspace / "cache").mkdir()
    outside = base / "outside"
    outside.mkdir()
    spec = jail.JailSpec(
        mode="bwrap",
        workdir=str(workspace / "repo"),
        extra_writable=(str(workspace / "cache"),),
        readonly=(sys.prefix,),
    )
    return World(project, workspace / "repo", workspace / "cache", outside, spec)


@pytest.fixture(autouse=True)
def clean_workspace(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "world" in request.fixturenames:
        w: World = request.getfixturevalue("world")
        git(w.workdir, "checkout", "-q", "--", ".")
        git(w.workdir, "clean", "-fdxq")
        for entry in w.cache.iterdir():
            entry.unlink()


# --- preflight -------------------------------------------------------------------------------


def fake_bwrap(folder: Path, body: str) -> Path:
    folder.mkdir()
    script = folder / "bwrap"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return folder


def test_preflight_passes_with_real_bwrap() -> None:
    assert jail.preflight("bwrap") is None


def test_preflight_fails_when_bwrap_is_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PatchgateError) as caught:
        jail.preflight("bwrap")
    assert caught.value.stage == "PREFLIGHT"
    assert caught.value.message == (
        "bubblewrap (bwrap) is not installed; install it (apt-get install -y bubblewrap) "
        "or set jail: none in patchgate.yaml"
    )


def test_preflight_fails_quoting_bwrap_when_it_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = fake_bwrap(
        tmp_path / "bin", "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(PatchgateError) as caught:
        jail.preflight("bwrap")
    assert caught.value.stage == "PREFLIGHT"
    assert "(bwrap: setting up uid map: Permission denied)" in caught.value.message
    assert caught.value.message.endswith("or set jail: none in patchgate.yaml")


def test_preflight_probes_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls"
    bin_dir = fake_bwrap(tmp_path / "bin", f"echo probe >> {calls}\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    jail.preflight("bwrap")
    jail.preflight("bwrap")
    assert calls.read_text() == "probe\n"


def test_preflight_warns_for_jail_none() -> None:
    assert jail.preflight("none") == "jail: none — patches and gates run unjailed"


def test_preflight_rejects_an_unknown_mode() -> None:
    with pytest.raises(PatchgateError, match="jail: docker is not one of bwrap, none"):
        jail.preflight("docker")


# --- jail: none ------------------------------------------------------------------------------


def test_none_mode_command_is_argv_unchanged(world: World) -> None:
    spec = dataclasses.replace(world.spec, mode="none")
    assert jail.command(["ruff", "check", "."], spec) == ["ruff", "check", "."]


def test_none_mode_run_keeps_the_clean_env_and_timeout(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TOKEN_VALUES.items():
        monkeypatch.setenv(name, value)
    code = "import os, time; print(sorted(os.environ), os.getcwd(), flush=True); time.sleep(30)"
    done = world.run(code, mode="none", timeout=0.5)
    assert done.timed_out
    assert "GITHUB_TOKEN" not in done.output and "PATCHGATE_PUSH_TOKEN" not in done.output
    assert "'PYTHONHASHSEED'" in done.output
    assert str(world.workdir) in done.output


# --- the filesystem --------------------------------------------------------------------------


def test_write_outside_the_workspace_fails(world: World) -> None:
    target = world.outside / "pwned"
    before = tree_snapshot(world.project.parent)
    done = world.run(
        f"""
        import os
        for path in [{str(target)!r}, "../pwned", "../../pwned", {str(world.project / "pwned")!r}]:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                open(path, "w").write("x")
                print("ESCAPED", path)
            except OSError as exc:
                print("blocked", path, exc.strerror)
        """
    )
    assert done.returncode == 0, done.output
    assert "ESCAPED" not in done.output
    assert done.output.count("blocked") == 4
    assert tree_snapshot(world.project.parent) == before
    assert not target.exists()


def test_live_repository_and_patchgate_state_are_invisible(world: World) -> None:
    workspaces = world.workdir.parent.parent
    folders = [str(p) for p in (world.project, world.project / "patches", workspaces)]
    folders.append(str(world.workdir.parent))
    done = world.run(
        f"""
        import os
        try:
            print("READ", open({str(world.project / ".env")!r}).read())
        except OSError as exc:
            print("live:", exc.strerror)
        for folder in {folders!r}:
            print(folder, sorted(os.listdir(folder)))
        print("audit", os.path.exists({str(world.project / "audit")!r}))
        """
    )
    assert "READ" not in done.output and "LIVE-ONLY-SECRET" not in done.output
    assert "live: No such file or directory" in done.output
    lines = done.output.splitlines()
    assert f"{world.project} ['patches']" in lines
    assert f"{world.project / 'patches'} ['workspaces']" in lines
    assert f"{workspaces} ['issue_1']" in lines
    assert f"{world.workdir.parent} ['cache', 'repo']" in lines
    assert "audit False" in lines
    assert (world.project / "patches" / "sentinel.txt").exists()  # there outside, just not inside


def test_etc_shadow_is_hidden(world: World) -> None:
    done = world.run(
        """
        for path in ["/etc/shadow", "/etc/gshadow"]:
            try:
                print("READ", path, open(path).read()[:20])
            except OSError as exc:
                print("hidden", path, exc.strerror)
        """
    )
    assert "READ" not in done.output
    assert done.output.count("hidden") == 2
    assert os.path.getsize("/etc/shadow") > 0  # the host's is intact


def test_root_home_shows_only_the_bound_python(world: World) -> None:
    done = world.run("import json, os; print(json.dumps(os.listdir('/root')))")
    bound = [*world.spec.readonly, sys.base_prefix, str(world.workdir)]
    allowed = {Path(p).relative_to("/root").parts[0] for p in bound if p.startswith("/root/")}
    listed = json.loads(done.output)
    assert set(listed) <= allowed
    assert set(os.listdir("/root")) - allowed  # the host's home has more than that


def test_symlink_to_etc_can_be_created_as_a_link(world: World) -> None:
    done = world.run("import os; os.symlink('/etc', 'etc_link')")
    assert done.returncode == 0, done.output
    link = world.workdir / "etc_link"
    assert link.is_symlink() and os.readlink(link) == "/etc"


def test_files_written_in_the_jail_belong_to_the_outside_user(world: World) -> None:
    done = world.run(
        "open('new.py', 'w').write('X = 1\\n'); open('module.py', 'a').write('Y = 2\\n')"
    )
    assert done.returncode == 0, done.output
    for name in ("new.py", "module.py"):
        st = (world.workdir / name).stat()
        assert st.st_uid == os.geteuid() and st.st_gid == os.getegid()
        assert st.st_mode & stat.S_IRUSR and st.st_mode & stat.S_IWUSR
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=world.workdir, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    assert "dubious" not in status.stderr
    assert status.stdout.splitlines() == [" M module.py", "?? new.py"]


def test_extra_writable_dir_is_writable(world: World) -> None:
    done = world.run(f"open({str(world.cache / 'mypy.json')!r}, 'w').write('{{}}')")
    assert done.returncode == 0, done.output
    assert (world.cache / "mypy.json").read_text() == "{}"


def test_jail_binds_are_read_only(world: World, tmp_path: Path) -> None:
    toolchain = tmp_path / "toolchain"
    toolchain.mkdir()
    (toolchain / "tool.txt").write_text("tool\n")
    code = f"""
        print(open({str(toolchain / "tool.txt")!r}).read().strip())
        try:
            open({str(toolchain / "new")!r}, "w")
        except OSError as exc:
            print("blocked", exc.strerror)
        """
    done = world.run(code, readonly=(*world.spec.readonly, str(toolchain)))
    assert done.output.splitlines() == ["tool", "blocked Read-only file system"]
    assert sorted(os.listdir(toolchain)) == ["tool.txt"]


def test_a_read_only_bind_around_the_workspace_is_refused(world: World) -> None:
    spec = dataclasses.replace(world.spec, readonly=(str(world.project),))
    with pytest.raises(PatchgateError, match="contains the workspace") as caught:
        jail.command(["true"], spec)
    assert caught.value.stage == "PREFLIGHT"


def test_a_writable_path_around_the_workspace_is_refused(world: World) -> None:
    spec = dataclasses.replace(world.spec, extra_writable=(str(world.project / "patches"),))
    with pytest.raises(ValueError, match="contains the workspace"):
        jail.command(["true"], spec)


def test_a_missing_read_only_path_is_a_preflight_error(world: World, tmp_path: Path) -> None:
    spec = dataclasses.replace(world.spec, readonly=(str(tmp_path / "nope"),))
    with pytest.raises(PatchgateError, match=r"does not exist; fix the path in patchgate\.yaml"):
        jail.command(["true"], spec)


def test_hidden_folders_in_the_workdir_are_empty_and_read_only(
    world: World, tmp_path: Path
) -> None:
    """A live gate's jail: live read-only, patchgate's patches/ and audit/ in it hidden."""
    state = (str(world.project / "patches"), str(world.project / "audit"))
    done = world.run(
        f"""
        import os
        for folder in {state!r}:
            try:
                open(os.path.join(folder, "forged"), "w").close()
                print("WROTE", folder)
            except OSError as exc:
                print("blocked", exc.strerror)
            print(os.path.basename(folder), os.listdir(folder))
        """,
        workdir=str(world.project),
        workdir_readonly=True,
        extra_writable=(str(tmp_path),),
        hidden=state,
    )
    assert done.output.splitlines() == [
        "blocked Read-only file system",
        "patches []",
        "blocked Read-only file system",
        "audit []",
    ]
    assert sorted(os.listdir(world.project / "patches")) == ["sentinel.txt", "workspaces"]
    assert os.listdir(world.project / "audit") == ["sentinel.txt"]


def test_a_hidden_folder_behind_a_symlink_is_hidden_where_it_is(tmp_path: Path) -> None:
    live = tmp_path / "live"
    (live / "data" / "store").mkdir(parents=True)
    (live / "data" / "store" / "result.json").write_text("{}")
    (live / "patches").symlink_to("data/store")
    code = "import os; print(os.listdir('patches'), os.listdir('data/store'))"
    spec = jail.JailSpec(
        mode="bwrap", workdir=str(live), readonly=(sys.prefix,), hidden=(str(live / "patches"),)
    )
    done = jail.run([PYTHON, "-c", code], spec, env={}, timeout=10, output_cap=4096)
    assert done.output.splitlines() == ["[] []"], done.output


def test_a_hidden_symlink_to_an_unbound_folder_leads_nowhere(tmp_path: Path) -> None:
    live, store = tmp_path / "live", tmp_path / "store"
    live.mkdir()
    store.mkdir()
    (live / "patches").symlink_to(store)
    code = "import os; print(os.path.islink('patches'), os.path.exists('patches'))"
    spec = jail.JailSpec(
        mode="bwrap", workdir=str(live), readonly=(sys.prefix,), hidden=(str(live / "patches"),)
    )
    done = jail.run([PYTHON, "-c", code], spec, env={}, timeout=10, output_cap=4096)
    assert done.output.splitlines() == ["True False"], done.output


def test_a_bound_path_inside_a_hidden_folder_is_refused(world: World) -> None:
    spec = dataclasses.replace(world.spec, hidden=(str(world.project / "patches"),))
    with pytest.raises(PatchgateError, match="which the jail hides") as caught:
        jail.command(["true"], spec)
    assert caught.value.stage == "PREFLIGHT"


# --- git -------------------------------------------------------------------------------------


def test_worktree_gitdir_is_out_of_reach(world: World) -> None:
    pointer = (world.workdir / ".git").read_text()
    gitdir = Path(pointer.split("gitdir:", 1)[1].strip())
    live_git = world.project / ".git"
    hooks = [str(gitdir / "hooks" / "pre-commit"), str(live_git / "hooks" / "pre-commit")]
    before = tree_snapshot(live_git)
    done = world.run(
        f"""
        import os
        try:
            print("pointer", repr(open(".git").read()))
        except OSError as exc:
            print("pointer unreadable", exc.strerror)
        for path in {hooks!r}:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "w").write("#!/bin/sh\\ntouch /tmp/owned\\n")
                print("ESCAPED", path)
            except OSError as exc:
                print("blocked", exc.strerror)
        try:
            open(".git", "w").write("gitdir: /tmp/evil\\n")
            print("ESCAPED pointer")
        except OSError as exc:
            print("pointer kept", exc.strerror)
        """
    )
    assert "pointer unreadable" in done.output and "gitdir:" not in done.output
    assert "ESCAPED" not in done.output
    assert done.output.count("blocked") == 2 and "pointer kept" in done.output
    assert (world.workdir / ".git").read_text() == pointer
    assert tree_snapshot(live_git) == before
    assert not (live_git / "hooks" / "pre-commit").exists()


def test_git_inside_works_as_plain_git_apply_in_cwd(world: World) -> None:
    (world.cache / "change.diff").write_text(
        "--- a/module.py\n+++ b/module.py\n@@ -1 +1 @@\n-VALUE = 1\n+VALUE = 2\n"
    )
    done = jail.run(
        ["sh", "-c", f"git status; git apply {world.cache / 'change.diff'} && echo applied"],
        world.spec,
        env={},
        timeout=10,
        output_cap=1 << 20,
    )
    assert "fatal: not a git repository" in done.output  # the worktree's metadata is hidden
    assert done.output.rstrip().endswith("applied")
    assert (world.workdir / "module.py").read_text() == "VALUE = 2\n"


# --- identity and environment ----------------------------------------------------------------


def test_jail_runs_unprivileged_without_capabilities(world: World) -> None:
    done = world.run(
        "import os; print(os.getuid(), os.getgid()); "
        "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])"
    )
    assert done.output.split() == ["1000", "1000", "0000000000000000"]


def test_caller_tokens_do_not_reach_the_jail(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TOKEN_VALUES.items():
        monkeypatch.setenv(name, value)
    done = jail.run(
        [PYTHON, "-c", textwrap.dedent(
            """
            import glob, os
            print(dict(os.environ))
            for path in glob.glob("/proc/*/environ"):
                try:
                    print(open(path, "rb").read())
                except OSError:
                    pass
            """
        )],
        world.spec,
        env={"GATE_SETTING": "kept", "PATCHGATE_PUSH_TOKEN": "passed-by-mistake"},
        timeout=10,
        output_cap=1 << 20,
    )  # fmt: skip
    assert "'GATE_SETTING': 'kept'" in done.output
    assert "'HOME': '/tmp'" in done.output
    for value in (*TOKEN_VALUES.values(), "passed-by-mistake"):
        assert value not in done.output


# --- the network -----------------------------------------------------------------------------


def test_hostnames_do_not_resolve(world: World) -> None:
    done = world.run(
        """
        import socket
        try:
            print("RESOLVED", socket.getaddrinfo("example.com", 443))
        except OSError as exc:
            print("no dns", type(exc).__name__)
        """
    )
    assert done.output.strip() == "no dns gaierror"


def test_host_loopback_server_is_unreachable(world: World) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        done = world.run(
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2)
                print("CONNECTED")
            except OSError as exc:
                print("refused", type(exc).__name__)
            """
        )
        assert done.output.strip() == "refused ConnectionRefusedError"
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever arrived


def test_raw_ip_is_unreachable_at_once(world: World) -> None:
    done = world.run(
        """
        import socket, time
        start = time.monotonic()
        try:
            socket.create_connection(("10.255.255.1", 80), timeout=5)
            print("CONNECTED")
        except OSError as exc:
            print("unreachable", exc.strerror, time.monotonic() - start < 1)
        """
    )
    assert done.output.strip() == "unreachable Network is unreachable True"


# --- privileges ------------------------------------------------------------------------------


def test_remounting_read_write_fails(world: World) -> None:
    probe = Path("/usr/patchgate-escape-probe")
    done = world.run(
        f"""
        import subprocess
        for target in ["/", "/usr"]:
            done = subprocess.run(["mount", "-o", "remount,rw", target], capture_output=True)
            print("remount", target, done.returncode)
        try:
            open({str(probe)!r}, "w").write("x")
            print("ESCAPED")
        except OSError as exc:
            print("blocked", exc.strerror)
        """
    )
    lines = done.output.splitlines()
    assert "ESCAPED" not in done.output
    assert [line.split()[2] != "0" for line in lines[:2]] == [True, True]
    assert lines[2] == "blocked Read-only file system"
    assert not probe.exists()


def test_nested_user_namespaces_fail(world: World) -> None:
    done = world.run(
        """
        import subprocess
        for argv in (["unshare", "-U", "true"], ["unshare", "-r", "true"]):
            print(subprocess.run(argv, capture_output=True).returncode)
        """
    )
    assert done.output.split() == ["1", "1"]


# --- limits ----------------------------------------------------------------------------------

FIFO_WRITER = """
    import os, sys, time
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # the daemon: detached, no stdout, holds the fifo open
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            fifo = os.open({fifo!r}, os.O_WRONLY)
            os.write(fifo, b"started\\n")
            os.write(ready_w, b"x")
            time.sleep(1)
            open("late.txt", "w").write("written after the step ended")
            os.write(fifo, b"done\\n")
            os._exit(0)
        os._exit(0)
    os.read(ready_r, 1)  # the daemon is up
    {then}
    """


def read_fifo_until_closed(fd: int, patience: float = 3.0) -> bytes:
    """Everything written to the fifo until its last writer is gone (EOF)."""
    os.set_blocking(fd, True)
    data = b""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"a jailed process still holds the fifo after the step: {data!r}")


@pytest.mark.parametrize("then", ["print('main exits')", "import time; time.sleep(60)"])
def test_no_process_outlives_the_step(world: World, then: str) -> None:
    """A daemonised writer dies with the step, whether the step exits or times out."""
    fifo = world.cache / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        start = time.monotonic()
        done = world.run(FIFO_WRITER.format(fifo=str(fifo), then=then), timeout=0.5)
        assert read_fifo_until_closed(reader) == b"started\n"
        assert time.monotonic() - start < 2.0
    finally:
        os.close(reader)
    assert done.timed_out == ("sleep" in then)
    assert not (world.workdir / "late.txt").exists()


def test_fork_bomb_hits_the_process_cap(world: World) -> None:
    done = world.run(
        """
        import os, signal
        forked = 0
        try:
            for _ in range(5000):
                if os.fork() == 0:
                    signal.pause()
                    os._exit(0)
                forked += 1
        except OSError as exc:
            print(type(exc).__name__)
        print(forked)
        """,
        timeout=20.0,
    )
    error, forked = done.output.split()
    assert error == "BlockingIOError"
    assert int(forked) < world.spec.max_processes
    assert subprocess.run(["true"]).returncode == 0  # the host still forks
    leftovers = [
        name for name in os.listdir(jail._cgroup_parent() or "/nonexistent")
        if name.startswith(f"patchgate-{os.getpid()}-")
    ]  # fmt: skip
    assert leftovers == []


def test_allocating_64_gib_raises_memory_error(world: World) -> None:
    done = world.run(
        """
        try:
            block = bytearray(64 << 30)
            print("ALLOCATED")
        except MemoryError:
            print("MemoryError")
        """
    )
    assert done.output.strip() == "MemoryError"


def test_memory_cap_is_the_configured_one(world: World) -> None:
    code = """
        try:
            block = bytearray(512 << 20)
            print("allocated")
        except MemoryError:
            print("MemoryError")
        """
    assert world.run(code, max_memory_mb=256).output.strip() == "MemoryError"
    assert world.run(code, max_memory_mb=2048).output.strip() == "allocated"


def test_memory_backed_scratch_is_capped_and_dev_is_read_only(world: World) -> None:
    done = world.run(
        """
        import os
        chunk = b"x" * (1 << 20)
        for path in ["/dev/fill", "/fill", "/tmp/fill", "/dev/shm/fill"]:
            try:
                with open(path, "wb") as fh:
                    for _ in range(200):
                        fh.write(chunk)
                print("FILLED", path)
            except OSError as exc:
                print(path, exc.strerror, flush=True)
            finally:
                if os.path.exists(path) and path != "/dev/fill":
                    os.remove(path)
        """,
        max_memory_mb=128,
    )
    lines = done.output.splitlines()
    assert lines[:2] == ["/dev/fill Read-only file system", "/fill Read-only file system"]
    if jail.memory_cap_available():
        # The step's memory cgroup counts tmpfs pages too: it ends before the tmpfs is full.
        assert "FILLED" not in done.output and "the kernel killed it" in done.output
    else:
        assert lines[2:] == [
            "/tmp/fill No space left on device",
            "/dev/shm/fill No space left on device",
        ]


def test_endless_output_is_cut_with_a_marker(world: World) -> None:
    done = world.run(
        "import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout=0.5, output_cap=100_000
    )
    assert done.timed_out and done.truncated
    assert done.output.startswith("x" * 100_000)
    assert "[patchgate: output truncated after 100000 bytes;" in done.output
    assert len(done.output) < 100_200


# --- host kernel settings (issue 12) ---------------------------------------------------------


def test_kernel_settings_are_read_only_in_the_jail(world: World) -> None:
    # Each file gets its own value back: were the jail broken, the host would be left as it was.
    done = world.run(
        """
        for path in ["/proc/sys/fs/lease-break-time", "/proc/sys/kernel/core_pattern"]:
            value = open(path).read()
            try:
                with open(path, "w") as fh:
                    fh.write(value)
                print("WROTE", path)
            except OSError as exc:
                print(path, exc.strerror)
        """
    )
    assert done.output.splitlines() == [
        "/proc/sys/fs/lease-break-time Read-only file system",
        "/proc/sys/kernel/core_pattern Read-only file system",
    ]


def test_no_host_global_proc_file_is_writable(world: World) -> None:
    done = world.run(
        """
        import os, stat
        found = []
        for top, dirs, files in os.walk("/proc"):
            if top == "/proc":
                dirs[:] = [d for d in dirs if not d.isdigit() and d not in ("self", "thread-self")]
            for name in files:
                path = os.path.join(top, name)
                try:
                    hidden = stat.S_ISCHR(os.stat(path).st_mode)  # /dev/null over it
                except OSError:
                    continue
                if os.access(path, os.W_OK) and not hidden:
                    found.append(path)
        print(found)
        """,
        timeout=30.0,
    )
    assert done.output.strip() == "[]"


# --- the session keyring (issue 12) -----------------------------------------------------------

KEYS = """
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ADD_KEY, KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}[platform.machine()]
SESSION, JOIN, SEARCH, READ = -3, 1, 10, 11

def call(*args):
    value = libc.syscall(*args)
    if value < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return value

def keyctl(*args):
    return call(KEYCTL, *args)

def add(name, payload):
    return call(ADD_KEY, b"user", name, payload, len(payload), SESSION)

def read(name):
    try:
        key = keyctl(SEARCH, SESSION, b"user", name, 0)
    except OSError as exc:
        return exc.strerror
    buf = ctypes.create_string_buffer(64)
    size = keyctl(READ, key, buf, 64)
    return buf.raw[:size].decode()
"""


def test_the_jail_gets_a_fresh_session_keyring(world: World) -> None:
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"add_key's syscall number on {platform.machine()} is not in this test")
    inside = (
        KEYS + "print(read(b'caller-secret')); add(b'planted', b'from the jail'); print('planted')"
    )
    caller = KEYS + textwrap.dedent(
        f"""
        import dataclasses, sys
        from patchgate import jail
        keyctl(JOIN, None)  # a keyring of this test's own, not the machine's
        add(b"caller-secret", b"kerberos-ticket")
        spec = jail.JailSpec(**{dataclasses.asdict(world.spec)!r})
        argv = [sys.executable, "-c", {inside!r}]
        done = jail.run(argv, spec, env={{}}, timeout=10, output_cap=4096)
        print(done.output.strip().replace("\\n", " | "))
        print("caller sees:", read(b"planted"), "/", read(b"caller-secret"))
        """
    )
    spec = dataclasses.asdict(world.spec)
    for key in ("extra_writable", "readonly", "hidden"):
        spec[key] = tuple(spec[key])
    caller = caller.replace(repr(dataclasses.asdict(world.spec)), repr(spec))
    done = subprocess.run(
        [PYTHON, "-c", caller], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.splitlines() == [
        "Required key not available | planted",
        "caller sees: Required key not available / kerberos-ticket",
    ], done.stderr


# --- the memory cap bounds a step (issue 12) ----------------------------------------------------


def test_a_steps_processes_and_tmpfs_together_stay_under_the_memory_cap(world: World) -> None:
    if not jail.memory_cap_available():
        pytest.skip("no writable memory cgroup here: preflight says so (tested below)")
    done = world.run(
        """
        import os, sys
        chunk = b"x" * (1 << 20)
        with open("/tmp/fill", "wb") as fh:  # 90 MiB of the 128 MiB tmpfs: allowed alone
            for _ in range(90):
                fh.write(chunk)
        print("tmpfs held", flush=True)
        children = []
        for _ in range(3):  # 3 x 60 MiB, each below RLIMIT_AS
            pid = os.fork()
            if pid == 0:
                block = bytearray(60 << 20)
                block[::4096] = b"y" * len(block[::4096])
                os._exit(0)
            children.append(pid)
        statuses = [os.waitpid(pid, 0)[1] for pid in children]
        print("DONE", statuses)
        """,
        timeout=30.0,
        max_memory_mb=128,
    )
    assert "tmpfs held" in done.output
    assert "DONE [0, 0, 0]" not in done.output
    assert "the kernel killed it" in done.output


def test_a_missing_memory_cgroup_is_a_preflight_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jail, "memory_cap_available", lambda: False)
    assert jail.NO_MEMORY_CAP in (jail.preflight("bwrap") or "")
