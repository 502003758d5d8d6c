"""Who may use the console: its settings (``ui:`` in patchgate.yaml), logins and CSRF tokens.

Two ways to log in, both giving an *identity* that becomes ``operator=`` of what the console
runs:

* the login token ``doit ui`` prints at start (``ui.print_token``, on by default); the identity
  is ``operator`` from patchgate.yaml, else the login name of the user who started the console;
* a configured operator: ``ui.operators`` maps a name to a password hash made by
  ``python -m patchgate.ui.auth NAME`` (hashlib.scrypt; the password is never stored).

A session is a random id in an HttpOnly, SameSite=Strict cookie, kept in memory only: a
restarted console asks everyone to log in again. Every state-changing request carries the
session's CSRF token (a form field ``csrf`` or the header ``X-CSRF-Token``).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import ipaddress
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import config
from ..errors import PatchgateError

STAGE = "UI"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
HASH_PREFIX = "scrypt"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8765
    read_only: bool = False
    print_token: bool = True
    operators: Mapping[str, str] = field(default_factory=dict)  # name -> scrypt hash
    token_operator: str = "operator"  # identity of a login with the printed token

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def settings_from(section: Any, operator: str | None) -> Settings:
    """The ``ui:`` section (already schema-checked) over the defaults."""
    values = dict(config.DEFAULTS["ui"][0])  # a file's ui: section replaces only its own keys
    values.update(section or {})
    for name, hashed in dict(values["operators"]).items():
        if parse_hash(hashed) is None:
            raise PatchgateError(
                STAGE,
                f"ui.operators.{name} in patchgate.yaml is not a password hash; make one with "
                f"python -m patchgate.ui.auth {name}",
            )
    if not values["print_token"] and not values["operators"]:
        raise PatchgateError(
            STAGE,
            "ui.print_token is off and ui.operators is empty: nobody could log in; add an "
            "operator (python -m patchgate.ui.auth NAME) or turn print_token on",
        )
    return Settings(
        host=str(values["host"]),
        port=int(values["port"]),
        read_only=bool(values["read_only"]),
        print_token=bool(values["print_token"]),
        operators=dict(values["operators"]),
        token_operator=operator or getpass.getuser(),
    )


# --- passwords ----------------------------------------------------------------------------


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$HASH`` (hex): what ``ui.operators`` holds."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"{HASH_PREFIX}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def parse_hash(text: Any) -> tuple[int, int, int, bytes, bytes] | None:
    if not isinstance(text, str):
        return None
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != HASH_PREFIX:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        return n, r, p, bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return None


def check_password(hashed: str, password: str) -> bool:
    parsed = parse_hash(hashed)
    if parsed is None:
        return False
    n, r, p, salt, want = parsed
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=2**26)
    return hmac.compare_digest(got, want)


# --- sessions -----------------------------------------------------------------------------


@dataclass
class Session:
    operator: str
    csrf: str
    plans: dict[str, str] = field(default_factory=dict)  # sha -> token of a prepared rollback


class Sessions:
    """Logged-in sessions by cookie value, and the login token printed at start."""

    def __init__(self, settings: Settings, token: str | None = None) -> None:
        self.settings = settings
        self.token = token or secrets.token_urlsafe(24)
        self._by_id: dict[str, Session] = {}

    def login(self, name: str, secret: str) -> str | None:
        """A new session id for a good token (empty name) or operator password, else None."""
        if not name:
            ok = self.settings.print_token and hmac.compare_digest(
                secret.encode(), self.token.encode()
            )
            operator = self.settings.token_operator
        else:
            hashed = self.settings.operators.get(name)
            ok = hashed is not None and check_password(hashed, secret)
            operator = name
        if not ok:
            return None
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(operator, secrets.token_urlsafe(32))
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        return self._by_id.get(session_id) if session_id else None

    def logout(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(str(sent).encode(), session.csrf.encode())


def main(argv: list[str]) -> int:
    """``python -m patchgate.ui.auth NAME``: read a password, print the ui.operators line."""
    if len(argv) != 1:
        print("usage: python -m patchgate.ui.auth NAME", file=sys.stderr)
        return 2
    password = getpass.getpass(f"password for {argv[0]}: ")
    if len(password) < 8 or password != getpass.getpass("again: "):
        print("ui: passwords differ or are shorter than 8 characters", file=sys.stderr)
        return 1
    print(f"ui:\n  operators:\n    {argv[0]}: {hash_password(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
