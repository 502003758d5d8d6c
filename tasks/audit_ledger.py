"""The ledger: the provenance log read and verified, its events folded by kind.

``check_chain`` verifies the hash chain (``provenance.verify_chain``), resuming from
``audit/results/chain-checkpoint.json`` after comparing a sha256 of the verified part of the
log. Next to the checkpoint is the *ledger*: what the verified events said, folded by ``fold``
(applies, rollbacks, emergencies, per patch its verdict, files and, for the verification of a
rollback's revert, the commit it reverts), so the resumed check only folds the new events.
Both are stored only when the chain is intact: after a violation every audit checks the whole
log again, against the last good checkpoint.

The caches are internal (no schema): anything unreadable in them is ignored and rebuilt.
Also here: the few readers of events by kind that display code needs without a full check
(``rollback_events``, ``confidences``) and commit-id helpers (``same_commit``, ``short``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

from . import provenance, trailers
from .errors import PatchgateError
from .provenance import EventKind

RESULTS_DIR = os.path.join("audit", "results")
CHECKPOINT_FILE = os.path.join(RESULTS_DIR, "chain-checkpoint.json")
# Bump when what the caches hold, or how it is derived, changes: old caches are then ignored.
STATE_VERSION = 2
# The ledger keeps the state of this many patches (the applies, rollbacks and emergencies
# all): what a rerun loads must not grow with the log (audit_report.REPORT_ROWS are shown).
LEDGER_PATCHES = 1000

HEX = re.compile(r"^[0-9a-f]{7,64}$")
# The kinds that tell a patch's state (a PatchState per patch id).
_PATCH_KINDS = frozenset(
    {
        EventKind.PROPOSE,
        EventKind.VERIFY_PASS,
        EventKind.VERIFY_FAIL,
        EventKind.APPLY,
        EventKind.PROMOTE_FAIL,
        EventKind.ROLLBACK,
    }
)


# --- the ledger: what the verified events said -----------------------------------------------


class Apply(NamedTuple):
    line: int
    patch_id: str
    commit: str
    operator: str | None
    files: list[str]


class Rollback(NamedTuple):
    line: int
    patch_id: str
    rollback_id: str | None
    revert_commit: str
    reverted_commit: str
    operator: str | None


class Emergency(NamedTuple):
    line: int
    last_good: str
    operator: str | None
    reason: str | None


@dataclass(slots=True)
class PatchState:
    """One patch as its events tell it; ``line`` is its latest event's.

    ``rollback_of``: set when the "patch" is the revert doit rollback verified (its verify
    events' ``issue`` is ``rollback-S12``): the first 12 hex digits of the commit it reverts.
    """

    line: int
    verdict: str | None = None
    files: list[str] = field(default_factory=list)
    promote_failure: str | None = None
    rollback_of: str | None = None
    confidence: float | None = None  # issue 14: the proposing model's confidence_score


@dataclass
class Ledger:
    events: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    applies: list[Apply] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)
    emergencies: list[Emergency] = field(default_factory=list)
    patches: dict[str, PatchState] = field(default_factory=dict)  # latest event last
    # commit -> [line, "STAGE: reason"] of promote_fail events naming a commit that stays in live
    unfinished: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "kinds": self.kinds,
            "applies": self.applies,
            "rollbacks": self.rollbacks,
            "emergencies": self.emergencies,
            "patches": [
                [pid, p.line, p.verdict, p.files, p.promote_failure, p.rollback_of, p.confidence]
                for pid, p in self.patches.items()
            ],
            "unfinished": self.unfinished,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ledger:
        return cls(
            events=int(data["events"]),
            kinds={str(k): int(v) for k, v in data["kinds"].items()},
            applies=[Apply(*row) for row in data["applies"]],
            rollbacks=[Rollback(*row) for row in data["rollbacks"]],
            emergencies=[Emergency(*row) for row in data["emergencies"]],
            patches={row[0]: PatchState(*row[1:]) for row in data["patches"]},
            unfinished=dict(data["unfinished"]),
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _paths(value: Any) -> list[str]:
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def _apply(ledger: Ledger, line: int, pid: str, ev: Mapping[str, Any]) -> None:
    commit = _text(ev.get("commit_hash")) or ""
    operator = _text(ev.get("operator"))
    ledger.applies.append(Apply(line, pid, commit, operator, _paths(ev.get("files"))))


def _rollback(ledger: Ledger, line: int, pid: str, ev: Mapping[str, Any]) -> None:
    ledger.rollbacks.append(
        Rollback(
            line,
            pid,
            _text(ev.get("rollback_id")),
            _text(ev.get("revert_commit")) or "",
            _text(ev.get("reverted_commit")) or "",
            _text(ev.get("operator")),
        )
    )


def _emergency(ledger: Ledger, line: int, pid: str, ev: Mapping[str, Any]) -> None:
    ledger.emergencies.append(
        Emergency(
            line,
            _text(ev.get("last_good_commit")) or "",
            _text(ev.get("operator")),
            _text(ev.get("reason")),
        )
    )


# The events the cross-check matches with history, each into its list of the ledger.
_LANDINGS: dict[str, Callable[[Ledger, int, str, Mapping[str, Any]], None]] = {
    EventKind.APPLY: _apply,
    EventKind.ROLLBACK: _rollback,
    EventKind.EMERGENCY_ROLLBACK: _emergency,
}


def _patch_state(ledger: Ledger, state: PatchState, kind: str, ev: Mapping[str, Any]) -> None:
    """What an event of one of the _PATCH_KINDS says about its patch."""
    if kind in (EventKind.VERIFY_PASS, EventKind.VERIFY_FAIL):
        state.verdict = "pass" if kind == EventKind.VERIFY_PASS else "fail"
        if isinstance(ev.get("gates"), dict):  # issue 11: "pass (excused: ruff)"
            state.verdict = trailers.verdict_label(state.verdict, ev["gates"])
        state.files = _paths(ev.get("affected_files")) or state.files
        state.rollback_of = trailers.rollback_target(ev.get("issue")) or state.rollback_of
    elif kind == EventKind.PROMOTE_FAIL:
        stage, reason = _text(ev.get("stage")) or "?", _text(ev.get("reason")) or "?"
        state.promote_failure = f"{stage}: {reason}"
        if _text(ev.get("commit_hash")):  # committed, then failed (e.g. a required push)
            ledger.unfinished[ev["commit_hash"]] = [state.line, stage]
    elif kind == EventKind.APPLY:
        state.promote_failure = None
    elif kind == EventKind.PROPOSE and isinstance(ev.get("confidence_score"), int | float):
        state.confidence = float(ev["confidence_score"])  # issue 14


def fold(ledger: Ledger, events: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
    """Add ``events`` (line number, event), in log order, to ``ledger``."""
    for line, ev in events:
        kind = ev.get("event")
        kind = kind if isinstance(kind, str) else "?"
        ledger.events += 1
        ledger.kinds[kind] = ledger.kinds.get(kind, 0) + 1
        pid = _text(ev.get("patch_id")) or provenance.NO_PATCH
        landing = _LANDINGS.get(kind)
        if landing is not None:
            landing(ledger, line, pid, ev)
        if pid == provenance.NO_PATCH or kind not in _PATCH_KINDS:
            continue
        state = ledger.patches.pop(pid, None) or PatchState(line)
        state.line = line
        _patch_state(ledger, state, kind, ev)
        ledger.patches[pid] = state  # re-inserted: the dict stays ordered by latest event
    for pid in list(islice(ledger.patches, max(0, len(ledger.patches) - LEDGER_PATCHES))):
        del ledger.patches[pid]  # a patch evicted and seen again starts from its new events


def short(sha: str) -> str:
    return sha[:12]


def same_commit(a: str, b: str) -> bool:
    """Two commit ids name the same commit (either may be abbreviated, 7+ hex digits)."""
    return bool(HEX.match(a) and HEX.match(b)) and (a.startswith(b) or b.startswith(a))


# --- the caches; the chain checked from the checkpoint ---------------------------------------


def read_cache(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return None
    return data


def write_cache(path: str, data: Mapping[str, Any]) -> None:
    """Atomic, compact (the caches are large and only the audit reads them)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    text = json.dumps(data, separators=(",", ":"))  # json.dump would not use the C encoder
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Stored:
    checkpoint: provenance.ChainCheckpoint
    ledger: Ledger
    last_full_check: str


def load_checkpoint(root: str) -> Stored | None:
    data = read_cache(os.path.join(root, CHECKPOINT_FILE))
    if data is None:
        return None
    try:
        return Stored(
            provenance.ChainCheckpoint.from_dict(data["checkpoint"]),
            Ledger.from_dict(data["ledger"]),
            str(data["last_full_check"]),
        )
    except (PatchgateError, KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass
class ChainResult:
    report: provenance.ChainReport
    ledger: Ledger  # every event of the log, the unterminated last line's too
    last_full_check: str


def check_chain(root: str) -> ChainResult:
    """verify_chain resumed from the stored checkpoint; store the new one if the chain holds."""
    stored = load_checkpoint(root)
    resume = stored.checkpoint if stored and stored.checkpoint.offset > 0 else None
    chain = provenance.verify_chain(root, resume, check_prefix=True)
    ledger = stored.ledger if stored and chain.resumed else Ledger()
    verified = chain.checkpoint.line_count
    fold(ledger, (e for e in chain.events if e[0] <= verified))
    last_full = stored.last_full_check if stored and chain.resumed else provenance.utc_now()
    if chain.ok and (chain.checkpoint != resume or stored is None):
        write_cache(
            os.path.join(root, CHECKPOINT_FILE),
            {
                "version": STATE_VERSION,
                "log": provenance.LOG_PATH,
                "last_full_check": last_full,
                "checkpoint": chain.checkpoint.to_dict(),
                "ledger": ledger.to_dict(),
            },
        )
    beyond = [e for e in chain.events if e[0] > verified]  # a last line without its "\n"
    fold(ledger, beyond)
    return ChainResult(chain, ledger, last_full)


# --- events by kind, read without a check (for display) --------------------------------------


def rollback_events(root: str) -> list[dict[str, Any]]:
    """The log's rollback events (lines without the word are not parsed: this is for display)."""
    try:
        with open(provenance.log_path(root), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    found = []
    for line in data.split(b"\n"):
        if b"rollback" in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == EventKind.ROLLBACK:
                found.append(event)
    return found


def log_stat(root: str) -> list[int | str] | None:
    """What says the log changed: its identity, size and the sha256 of its bytes.

    A digest, not the mtime (issue 12: an in-place edit of the same length with the mtime put
    back was not seen). Hashing a 30 MB log: 0.15 s on a loaded 2-core machine.
    """
    path = provenance.log_path(root)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, digest]


def confidences(root: str) -> dict[str, float]:
    """patch id -> the confidence_score of the model that proposed it (provenance events)."""
    try:
        with open(provenance.log_path(root), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    found: dict[str, float] = {}
    for line in data.split(b"\n"):
        if b'"propose"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        score = event.get("confidence_score") if isinstance(event, dict) else None
        if event.get("event") == EventKind.PROPOSE and isinstance(score, int | float):
            found[str(event.get("patch_id"))] = float(score)
    return found
