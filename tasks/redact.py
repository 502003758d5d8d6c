"""Secrets never reach a log: push tokens and URL credentials are replaced by *** everywhere.

Every line a landing writes to its log goes through ``redact.log``, every line it shows the user
through ``redact.tell``; a step whose error messages may quote a URL is declared with
``redact.step`` instead of ``steps.step``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from functools import partial
from typing import Any

from . import report, steps
from .errors import PatchgateError

# Environment variables that hold a push token: their values are redacted wherever they appear.
TOKEN_VARIABLES = ("PATCHGATE_PUSH_TOKEN", "GITHUB_TOKEN")
USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")

# Secrets seen in this process (remote URLs' userinfo): redacted from everything logged.
_secrets: set[str] = set()


def remember_url_secrets(url: str) -> None:
    """A URL's userinfo (user:token@) is a secret from now on in this process."""
    parsed = urllib.parse.urlsplit(url)
    for part in (parsed.password, parsed.username if parsed.password is None else None):
        if part and len(part) >= 4:
            _secrets.update({part, urllib.parse.unquote(part)})


def known_secrets() -> list[str]:
    found = set(_secrets)
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            found.update({value, urllib.parse.quote(value, safe="")})
    return sorted(found, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with URL userinfo (user:token@) and every known token value replaced by ***."""
    text = USERINFO.sub(r"\g<scheme>***@", text)
    for secret in known_secrets():
        text = text.replace(secret, "***")
    return text


def log(path: str, text: str) -> None:
    """Append to the run log, redacted: every line a landing writes goes through here."""
    report.log(path, redact(text))


def tell(path: str, text: str) -> None:
    """A line the user should see now (doit shows an action's stdout) and in the log."""
    print(redact(text), flush=True)
    log(path, text)


def redacting(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func``; its error messages leave redacted (a push error can quote a URL)."""
    try:
        return func(*args)
    except PatchgateError as err:
        raise PatchgateError(err.stage, redact(err.message)) from None


def step(
    group: str,
    name: str,
    func: Callable[..., Any],
    args: list[Any],
    *,
    on_failure: Callable[[str, str, str], None] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """steps.step whose action's messages are redacted before anything logs them."""
    task = steps.step(group, name, func, args, on_failure=on_failure, **kw)
    action, (_, *rest) = task["actions"][0]
    task["actions"] = [(action, [partial(redacting, func), *rest])]
    return task
