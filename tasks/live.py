"""The live repository before a landing: its branch, its remote, in sync with it, clean where
the landing writes. Every kind of landing (promote, finalize, rollback) checks live through here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import config, git, redact
from .errors import PatchgateError
from .journal import check_parents
from .steps import read_json


def current_branch(live: str, configured: str | None) -> str:
    name = git.branch_name(live)
    if name is None:
        raise PatchgateError(
            "PREFLIGHT",
            f"live ({live}) is on a detached HEAD; check out the branch to land on "
            f"(git -C {live} switch {configured or 'main'}) and retry",
        )
    if configured and name != configured:
        raise PatchgateError(
            "PREFLIGHT",
            f"live is on branch {name}, but promotions land on {configured} (branch "
            f"in patchgate.yaml); switch live to it (git -C {live} switch {configured}) or "
            "change branch",
        )
    return name


def remote_url(live: str, remote: str | None) -> str | None:
    """The URL of ``remote`` in live, or None when there is no such remote (or none is set)."""
    if not remote:
        return None
    url = git.remote_url(live, remote)
    if url is None:
        return None
    redact.remember_url_secrets(url)
    return url


def remote_access(url: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """git options and environment to reach ``url``: an env token becomes a credential helper.

    The token travels in the helper's environment only, never on a command line or in a log.
    """
    token = next((os.environ[v] for v in redact.TOKEN_VARIABLES if os.environ.get(v)), None)
    if token and url.startswith(("http://", "https://")) and not redact.USERINFO.match(url):
        helper = (
            '!f() { test "$1" = get || exit 0; echo username=x-access-token; '
            'echo "password=$PATCHGATE_CREDENTIAL"; }; f'
        )
        options = ("-c", "credential.helper=", "-c", f"credential.helper={helper}")
        return options, git.git_env({"PATCHGATE_CREDENTIAL": token})
    return (), git.git_env()


def first_problem(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for prefix in ("fatal:", "error:", "!", "remote: error", "ERROR"):
        for line in lines:
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "no output"


def sync_live(cfg: config.Config, branch: str, log: str) -> list[str]:
    """Fetch the remote; fast-forward live when it is only behind; refuse when it diverged.

    Runs in a landing's setup task (before the verify chain is planned), under the lock.
    Returns what it did, one line each.
    """
    live, remote = cfg.live_repo, cfg["remote"]
    if not remote:
        return ["remote: null: no fetch, no push"]
    url = remote_url(live, remote)
    if url is None:
        return [f"live has no remote named {remote}: no fetch, no push"]
    if cfg["skip_up_to_date"]:
        return [f"skip_up_to_date=1: {remote}/{branch} was not checked"]
    tracking = f"refs/remotes/{remote}/{branch}"
    options, env = remote_access(url)
    redact.log(log, f"promote: git fetch {remote} ({url}) {branch}")
    refspec = f"+refs/heads/{branch}:{tracking}"
    done = git.fetch(live, options, remote, refspec, env, float(cfg["git_timeout"]))
    redact.log(log, done.output)
    if done.returncode != 0:
        if "couldn't find remote ref" in done.output:
            return [f"{remote} has no branch {branch} yet: the push creates it"]
        raise PatchgateError(
            "PREFLIGHT",
            redact.redact(
                f"cannot fetch {remote} ({url}): {first_problem(done.output)}; check the network "
                "and the remote, or pass skip_up_to_date=1 to land without checking it "
                "(remote: null disables fetch and push)"
            ),
        )
    theirs, ours = git.rev_parse(live, tracking), git.rev_parse(live, "HEAD")
    if theirs == ours or git.is_ancestor(live, theirs, ours):
        return []
    if not git.is_ancestor(live, ours, theirs):
        raise PatchgateError(
            "PREFLIGHT",
            f"live and {remote}/{branch} have diverged (live {ours[:12]}, "
            f"{remote} {theirs[:12]}); bring the remote's commits into live (git -C {live} "
            f"pull --rebase {remote} {branch}) and retry, or pass skip_up_to_date=1 to land "
            "anyway (the push will then fail)",
        )
    count = git.count_between(live, ours, theirs)
    if not cfg["fast_forward"]:
        raise PatchgateError(
            "PREFLIGHT",
            f"{remote}/{branch} is {count} commit(s) ahead of live; update live "
            f"(git -C {live} pull --ff-only {remote} {branch}), or pass fast_forward=1, or "
            "skip_up_to_date=1 to land without it",
        )
    merged = git.merge_ff_only(live, theirs)
    redact.log(log, merged.output)
    if merged.returncode != 0:
        raise PatchgateError(
            "PREFLIGHT",
            f"live is {count} commit(s) behind {remote}/{branch} and cannot be "
            f"fast-forwarded: {first_problem(merged.output)}; commit or move your uncommitted "
            "changes in those files, then retry",
        )
    return [
        f"live fast-forwarded {count} commit(s) to {remote}/{branch} ({theirs[:12]}); "
        "the workspace is verified on it before anything lands"
    ]


def changed_entries(status: str) -> set[str]:
    return {e[3:] for e in status.split("\0") if len(e) > 3}


def check_clean(
    live: str, paths: Sequence[str], what: str, stage: str = "PROMOTE", retry: str = "retry"
) -> None:
    """No uncommitted change (staged, unstaged, untracked, ignored) in the paths to land."""
    options = ("--untracked-files=all", "--ignored=matching", "--no-renames")
    out = git.status_z(live, *options, paths=paths)
    dirty = sorted(changed_entries(out))
    if dirty:
        more = f" and {len(dirty) - 5} more" if len(dirty) > 5 else ""
        raise PatchgateError(
            stage,
            f"live has uncommitted changes in {', '.join(dirty[:5])}{more}, which {what} "
            "would overwrite; commit, move or discard them (patchgate touches none of your "
            f"work), then {retry}",
        )


def check_writable(live: str, changes: list[dict[str, Any]]) -> None:
    for change in changes:
        check_parents(live, change["path"], create=False)
        full = os.path.join(live, change["path"])
        if os.path.isdir(full) and not os.path.islink(full):
            raise PatchgateError(
                "PROMOTE", f"{change['path']} is a directory in live; move it away and retry"
            )


def landed_record(path: str, live: str) -> dict[str, Any] | None:
    """A landing whose finish has not run yet, if its commit is still in live's history."""
    if not os.path.exists(path):
        return None
    record: dict[str, Any] = read_json(path)
    if git.is_ancestor(live, record["commit"], "HEAD"):
        return record
    os.unlink(path)  # the commit left live's history (reset by hand): land afresh
    return None
