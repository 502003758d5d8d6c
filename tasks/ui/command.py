"""doit ui: start the operator console for this project (see docs/console.md).

The task creator only reads the configuration; the action imports FastAPI and uvicorn (so no
other doit command pays for them), prints where to log in, and serves until Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from .. import config, report
from ..errors import PatchgateError
from ..steps import failed_creator, step
from .auth import STAGE, Settings, settings_from

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dodo_file(root: str) -> str:
    """The dodo file this doit run loaded: the console runs every command with the same one."""
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        name = getattr(module, "__name__", "")
        if (
            isinstance(path, str)
            and hasattr(module, "task_ui")
            and not name.startswith("patchgate")
        ):
            return os.path.abspath(path)
    for candidate in (
        os.path.join(root, "dodo.py"),
        os.path.join(os.path.dirname(PACKAGE_DIR), "dodo.py"),
    ):
        if os.path.isfile(candidate):
            return candidate
    raise PatchgateError(STAGE, "found no dodo.py to run doit commands with; run doit ui -f DODO")


def console_url(settings: Settings, port: int) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{port}"


def serve(root: str, dodo: str, settings: Settings) -> dict[str, Any]:
    """Action of doit ui: serve until interrupted; the token goes to the terminal only."""
    import socket

    import uvicorn

    from .app import create_app

    app = create_app(root, settings, dodo)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise PatchgateError(
            STAGE,
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); stop what uses "
            "it or set ui.port in patchgate.yaml",
        ) from None
    url = console_url(settings, sock.getsockname()[1])
    print(f"console: {url}/login  (project {root}; Ctrl-C stops it)", flush=True)
    if settings.print_token:
        # Printed, never logged: the run log and provenance must not hold a secret.
        print(f"console: login token {app.state.sessions.token}", flush=True)
    if not settings.loopback:
        print(f"console: WARNING: listening on {settings.host}, not only this machine", flush=True)
    if settings.read_only:
        print(
            "console: read-only (ui.read_only): nothing can be promoted or rolled back", flush=True
        )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, SystemExit):
        # uvicorn shuts down gracefully on Ctrl-C, then raises the signal again for doit's
        # handler: that is how the console ends, not a failure.
        if not server.should_exit:
            raise
    finally:
        app.state.jobs.stop_all()
        sock.close()
    return {"summary": {"RESULT": "SUCCESS", "CONSOLE": url}}


def task_ui() -> Iterator[dict[str, Any]]:
    """Start the operator console (a local web page): review, promote, roll back, audit.

    configured under ui: in patchgate.yaml: host (127.0.0.1), port (8765), read_only,
    print_token, operators (name: hash from python -m patchgate.ui.auth NAME); docs/console.md
    """
    root = os.getcwd()
    log = report.log_path(root, "ui")
    try:
        cfg = config.load(root)
        settings = settings_from(cfg["ui"], cfg["operator"])
        dodo = dodo_file(root)
    except PatchgateError as err:
        yield failed_creator("ui", root, log, err)
        return
    yield step(
        "ui",
        "serve",
        serve,
        [root, dodo, settings],
        root=root,
        log=log,
        stage=STAGE,
        doc="the operator console",
        uptodate=[False],
    )
