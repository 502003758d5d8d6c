"""The provenance log: ``audit/provenance.jsonl``, append-only, one event a line, hash-chained.

Every event carries ``seq`` (0-based, consecutive), ``prev_hash`` (the ``hash`` of the event
before it, 64 zeros for the first) and ``hash``: the sha256 of the canonical JSON of the event
without its ``hash`` key. Editing, deleting, inserting or reordering a line therefore breaks the
chain at that line, and ``verify_chain`` names it.

Appends take an exclusive ``flock`` on ``audit/provenance.lock``, write each line with one
``os.write`` on an ``O_APPEND`` descriptor and ``fsync``. A writer killed mid-line leaves a torn
line (no trailing newline). It is never rewritten: the next append terminates it, writes a
``recovered`` event naming it, then its own event. Readers skip torn lines; the verifier accepts
them only when a ``recovered`` event accounts for them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, BinaryIO, cast

from . import faults, schema
from .errors import PatchgateError

STAGE = "PROVENANCE"
LOG_PATH = "audit/provenance.jsonl"
LOCK_PATH = "audit/provenance.lock"
SCHEMA_NAME = "provenance-event.schema.json"
GENESIS_HASH = "0" * 64
NO_PATCH = "-"


class EventKind(StrEnum):
    """The ``event`` of a provenance event (the schema's enum; tests/test_stages.py checks).

    A ``StrEnum``: a member is the string itself, so it is written, hashed and compared as one.
    """

    PROPOSE = "propose"
    VERIFY_PASS = "verify_pass"
    VERIFY_FAIL = "verify_fail"
    APPLY = "apply"
    PROMOTE_FAIL = "promote_fail"
    ROLLBACK = "rollback"
    EMERGENCY_ROLLBACK = "emergency_rollback"
    RECOVERED = "recovered"
    # issue 15: doit watch (CI) and time-based monitoring (metrics); nothing reverts by itself
    ROLLBACK_PROPOSED = "rollback_proposed"
    MONITOR = "monitor"
    PULL_REQUEST = "pull_request"


EVENT_KINDS = tuple(EventKind)
# Filled by the log itself; a caller passing them has a bug.
FILLED_KEYS = ("timestamp", "seq", "prev_hash", "hash")
# Written first so a line reads well; the hash does not depend on key order.
_HEAD_KEYS = ("seq", "timestamp", "event", "patch_id")
_TAIL_KEYS = ("prev_hash", "hash")
_TAIL_BLOCK = 8192
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


# --- lines and hashes ------------------------------------------------------------------------


def log_path(root: str) -> str:
    return os.path.join(root, LOG_PATH)


def lock_path(root: str) -> str:
    return os.path.join(root, LOCK_PATH)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_json(obj: Mapping[str, Any]) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def event_hash(event: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``event`` without its ``hash`` key."""
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def chain_event(
    fields: Mapping[str, Any], seq: int, prev_hash: str, timestamp: str
) -> dict[str, Any]:
    """``fields`` completed with timestamp, seq, prev_hash and its hash."""
    event = dict(fields)
    event.update(timestamp=timestamp, seq=seq, prev_hash=prev_hash)
    event["hash"] = event_hash(event)
    return event


def format_line(event: Mapping[str, Any]) -> bytes:
    """One log line: compact JSON, the header keys first, prev_hash and hash last, then "\\n"."""
    head = [k for k in _HEAD_KEYS if k in event]
    tail = [k for k in _TAIL_KEYS if k in event]
    rest = sorted(k for k in event if k not in _HEAD_KEYS and k not in _TAIL_KEYS)
    ordered = {k: event[k] for k in (*head, *rest, *tail)}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def _load_json(line: bytes) -> tuple[bool, Any]:
    """(True, value) if ``line`` is JSON, else (False, None): a torn line."""
    try:
        return True, json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False, None


def _is_event(value: Any) -> bool:
    """A JSON object with the chain fields: something the chain can link to."""
    if not isinstance(value, dict):
        return False
    seq = value.get("seq")
    return (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and isinstance(value.get("hash"), str)
        and isinstance(value.get("prev_hash"), str)
    )


# --- schema ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    with open(os.path.join(schema.SCHEMA_DIR, SCHEMA_NAME), encoding="utf-8") as fh:
        return cast(dict[str, Any], json.load(fh))


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise PatchgateError naming the field of ``event`` the schema rejects."""
    what = (
        f"provenance event {event.get('event')!r} for patch {event.get('patch_id')!r} not "
        f"written; fix the field against schemas/{SCHEMA_NAME}"
    )
    schema.validate(dict(event), SCHEMA_NAME, STAGE, what)


# --- appending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tail:
    """The end of the log: the last chainable event and the torn lines after it."""

    seq: int = -1
    hash: str = GENESIS_HASH
    needs_newline: bool = False
    torn: tuple[tuple[int, int], ...] = ()  # (byte offset, length) of torn lines, in file order


@contextmanager
def _locked(root: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(lock_path(root)), exist_ok=True)
    fd = os.open(lock_path(root), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, or when the holder dies
        yield
    finally:
        os.close(fd)


def _read_tail(path: str) -> _Tail:
    """Walk back from the end of the file to the last chainable event; never the whole file."""
    if not os.path.exists(path):  # under the lock: nobody creates it meanwhile
        return _Tail()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return _Tail()
        fh.seek(size - 1)
        needs_newline = fh.read(1) != b"\n"
        buf, buf_start = b"", size
        end = size if needs_newline else size - 1  # end of the current line, "\n" excluded
        torn: list[tuple[int, int]] = []
        while True:
            nl = buf.rfind(b"\n", 0, end - buf_start)
            while nl == -1 and buf_start > 0:
                new_start = max(0, buf_start - _TAIL_BLOCK)
                fh.seek(new_start)
                buf = fh.read(buf_start - new_start) + buf
                buf_start = new_start
                nl = buf.rfind(b"\n", 0, end - buf_start)
            start = buf_start + nl + 1
            is_json, value = _load_json(buf[start - buf_start : end - buf_start])
            if _is_event(value):
                return _Tail(value["seq"], value["hash"], needs_newline, tuple(reversed(torn)))
            if not is_json:
                torn.append((start, end - start))
            # JSON that is not an event is left alone: the verifier reports it.
            if start == 0:
                return _Tail(needs_newline=needs_newline, torn=tuple(reversed(torn)))
            end = start - 1


def _line_numbers(path: str, offsets: Sequence[int]) -> list[int]:
    """1-based line numbers of the lines starting at ``offsets`` (rare: recovery only)."""
    numbers, count, pos = [], 0, 0
    with open(path, "rb") as fh:
        for offset in offsets:
            while pos < offset:
                chunk = fh.read(min(1 << 20, offset - pos))
                if not chunk:
                    break
                count += chunk.count(b"\n")
                pos += len(chunk)
            numbers.append(count + 1)
    return numbers


def _recovered_fields(path: str, tail: _Tail) -> list[dict[str, Any]]:
    if not tail.torn:
        return []
    numbers = _line_numbers(path, [offset for offset, _ in tail.torn])
    return [
        {"event": EventKind.RECOVERED, "patch_id": NO_PATCH, "torn_line": n, "torn_bytes": length}
        for n, (_, length) in zip(numbers, tail.torn, strict=True)
    ]


def _check_caller_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    filled = [k for k in FILLED_KEYS if k in event]
    if filled:
        raise PatchgateError(
            STAGE, f"provenance event passes {', '.join(filled)}: the log fills these; drop them"
        )
    if event.get("event") == EventKind.RECOVERED:
        raise PatchgateError(
            STAGE, "'recovered' events are written by the log itself only; drop it"
        )
    try:
        canonical_json(event).encode("utf-8")
    except (TypeError, ValueError) as exc:  # a Path, a set, NaN, a lone surrogate
        raise PatchgateError(
            STAGE,
            f"provenance event {event.get('event')!r} is not plain JSON ({exc}); pass "
            "str, int, float, bool, list and dict values only",
        ) from exc
    return dict(event)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # a short write on a regular file is rare; finish the line under the lock
        view = view[os.write(fd, view) :]


def append_event(root: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """Append ``event`` (at least ``event`` and ``patch_id``) and return it as written.

    The event is validated, complete, before the lock is taken: with stand-in chain values
    of the same form as the real ones, which the log computes under the lock. Validation is
    most of an append's cost, so the lock is held only to read the tail, write and fsync.
    Nothing is written unless every event of this append is valid.
    """
    fields = _check_caller_fields(event)
    validate_event(chain_event(fields, 0, GENESIS_HASH, utc_now()))
    path = log_path(root)
    with _locked(root):
        created = not os.path.exists(path)
        earlier = _landing_recorded(path, fields)
        if earlier is not None:
            return earlier
        tail = _read_tail(path)
        recovered = _recovered_fields(path, tail)
        now = utc_now()
        seq, prev = tail.seq, tail.hash
        written: list[dict[str, Any]] = []
        for item in [*recovered, fields]:
            seq += 1
            written.append(chain_event(item, seq, prev, now))
            prev = written[-1]["hash"]
        for chained in written[:-1]:
            validate_event(chained)  # recovered events: rare, and made here
        fd = os.open(path, os.O_APPEND | os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for i, chained in enumerate(written):
                prefix = b"\n" if i == 0 and tail.needs_newline else b""
                line = prefix + format_line(chained)
                if faults.armed("provenance-torn"):  # a crash in the middle of this line
                    _write_all(fd, line[: len(line) // 2])
                    os.fsync(fd)
                    faults.point("provenance-torn")
                _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(os.path.dirname(path))
    return written[-1]


# Events that record a landing: one per commit, whoever appends it twice (a command finishing
# a landing again after a crash between its append and its own record of being done).
LANDING_KEYS: dict[str, str] = {EventKind.APPLY: "commit_hash", EventKind.ROLLBACK: "revert_commit"}
_LANDING_WINDOW = 256 * 1024


def _landing_recorded(path: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event already recording the same landing, among the log's last events; else None.

    An ``apply`` names its commit, a ``rollback`` its revert commit: a second such event for
    the same commit is never news, only a rerun after a crash. The last 256 KiB of the log
    are searched (a rerun follows its crash closely); the append stays O(1) in the log size.
    """
    key = LANDING_KEYS.get(str(fields.get("event")))
    commit = fields.get(key) if key else None
    if not commit or not os.path.exists(path):
        return None
    needle = json.dumps(commit).encode()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - _LANDING_WINDOW))
        block = fh.read()
    if needle not in block:
        return None
    for line in reversed(block.split(b"\n")):
        if needle not in line:
            continue
        _, value = _load_json(line)
        if (
            _is_event(value)
            and value.get("event") == fields["event"]
            and value.get(key) == commit
            and value.get("patch_id") == fields.get("patch_id")
        ):
            return cast(dict[str, Any], value)
    return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------------


def read_events(root: str) -> list[dict[str, Any]]:
    """Every JSON object line of the log, in order; torn lines are skipped. No chain check."""
    try:
        with open(log_path(root), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    events = []
    for line in data.split(b"\n"):
        _, value = _load_json(line)
        if isinstance(value, dict):
            events.append(value)
    return events


# --- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    line_no: int  # 1-based
    message: str


@dataclass(frozen=True)
class ChainCheckpoint:
    """Where a verification stopped: resume from here to parse only what was appended since.

    Taken after the last complete line. ``inode``/``device`` and the sha256 of the last verified
    line tell (cheaply) whether the verified prefix is still the same file.
    """

    offset: int = 0  # bytes verified, ends just after a "\n"
    line_count: int = 0
    last_seq: int = -1
    last_hash: str = GENESIS_HASH
    last_prev_hash: str = GENESIS_HASH
    last_line_no: int = 0
    anchor_seq: int = -1  # the event before the last one, for when the last broke the chain
    anchor_hash: str = GENESIS_HASH
    last_broken: bool = False
    inode: int = -1
    device: int = -1
    tail_sha256: str = hashlib.sha256(b"").hexdigest()
    tail_len: int = 0
    pending_torn: tuple[tuple[int, int], ...] = ()  # (line_no, bytes) awaiting a recovered event
    violations: tuple[Violation, ...] = ()  # found in the verified prefix
    prefix_sha256: str = ""  # sha256 of the verified bytes [0, offset); "": unknown

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["pending_torn"] = [list(p) for p in self.pending_torn]
        data["violations"] = [[v.line_no, v.message] for v in self.violations]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChainCheckpoint:
        try:
            values = dict(data)
            values["pending_torn"] = tuple((int(a), int(b)) for a, b in data["pending_torn"])
            values["violations"] = tuple(Violation(int(a), str(b)) for a, b in data["violations"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise PatchgateError(
                STAGE, f"provenance checkpoint is unreadable ({exc}); verify without it"
            ) from exc


@dataclass
class ChainReport:
    events: list[tuple[int, dict[str, Any]]]  # (line_no, event); after a resume, new ones only
    violations: list[Violation]  # the whole log's, the resumed prefix's included
    pending_torn: list[int]  # torn lines at the end: the next append records them
    checkpoint: ChainCheckpoint
    lines_parsed: int
    resumed: bool
    full_check_reason: str = ""  # why a resume fell back to a full check

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def first_violation(self) -> Violation | None:
        return self.violations[0] if self.violations else None


@dataclass
class _State:
    """The verifier's running state; a checkpoint freezes it."""

    line_no: int = 0
    last_seq: int = -1
    last_hash: str = GENESIS_HASH
    last_prev_hash: str = GENESIS_HASH
    last_line_no: int = 0
    anchor_seq: int = -1
    anchor_hash: str = GENESIS_HASH
    last_broken: bool = False
    pending: dict[int, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def _state_from(cp: ChainCheckpoint) -> _State:
    return _State(
        line_no=cp.line_count,
        last_seq=cp.last_seq,
        last_hash=cp.last_hash,
        last_prev_hash=cp.last_prev_hash,
        last_line_no=cp.last_line_no,
        anchor_seq=cp.anchor_seq,
        anchor_hash=cp.anchor_hash,
        last_broken=cp.last_broken,
        pending=dict(cp.pending_torn),
        violations=list(cp.violations),
    )


def _checkpoint_of(
    st: _State, offset: int, tail: bytes, file_id: tuple[int, int], digest: str
) -> ChainCheckpoint:
    return ChainCheckpoint(
        offset=offset,
        line_count=st.line_no,
        last_seq=st.last_seq,
        last_hash=st.last_hash,
        last_prev_hash=st.last_prev_hash,
        last_line_no=st.last_line_no,
        anchor_seq=st.anchor_seq,
        anchor_hash=st.anchor_hash,
        last_broken=st.last_broken,
        inode=file_id[0],
        device=file_id[1],
        tail_sha256=hashlib.sha256(tail).hexdigest(),
        tail_len=len(tail),
        pending_torn=tuple(sorted(st.pending.items())),
        violations=tuple(st.violations),
        prefix_sha256=digest,
    )


def _gap_message(st: _State, seq: int) -> str:
    expected = st.last_seq + 1
    if seq > expected:
        return (
            f"seq {seq} where {expected} was expected: {seq - expected} event(s) before this "
            "line are missing (deleted?)"
        )
    if seq < expected:
        return (
            f"seq {seq} where {expected} was expected: this line repeats or moves an earlier "
            "event (inserted or reordered?)"
        )
    return (
        f"prev_hash does not match the hash of the event before it (line {st.last_line_no}): "
        "one of the two was replaced"
    )


def _account_torn(st: _State, event: Mapping[str, Any]) -> list[str]:
    line, size = event.get("torn_line"), event.get("torn_bytes")
    if not isinstance(line, int) or line not in st.pending:
        return [f"recovered event names line {line}, which is not an unaccounted torn line"]
    if st.pending[line] != size:
        return [f"recovered event says line {line} has {size} bytes; it has {st.pending[line]}"]
    del st.pending[line]
    return []


def _flag_pending(st: _State) -> None:
    for line, _ in sorted(st.pending.items()):
        st.violations.append(
            Violation(line, "not valid JSON, and no recovered event accounts for it")
        )
    st.pending.clear()


def _link(st: _State, line_no: int, event: Mapping[str, Any], problems: list[str]) -> None:
    """Check that ``event`` continues the chain; move the chain's end to it."""
    seq, prev, digest = event["seq"], event["prev_hash"], event["hash"]
    if seq == st.last_seq + 1 and prev == st.last_hash:
        st.anchor_seq, st.anchor_hash, st.last_broken = st.last_seq, st.last_hash, False
    elif st.last_broken and seq == st.anchor_seq + 1 and prev == st.anchor_hash:
        if st.last_seq == seq + 1 and st.last_prev_hash == digest:
            # The line before belongs after this one: keep it as the chain's end.
            problems.append(f"seq {seq} comes after seq {seq + 1}: lines swapped")
            st.anchor_seq, st.anchor_hash, st.last_broken = seq, digest, False
            return
        # The line before was inserted: the chain goes on from the event before it.
        st.last_broken = False
    else:
        problems.append(_gap_message(st, seq))
        if not st.last_broken:
            st.anchor_seq, st.anchor_hash = st.last_seq, st.last_hash
        st.last_broken = True
    st.last_seq, st.last_hash, st.last_prev_hash, st.last_line_no = seq, digest, prev, line_no


def _check_line(st: _State, raw: bytes) -> None:
    st.line_no += 1
    line_no = st.line_no
    is_json, value = _load_json(raw)
    if not is_json:
        st.pending[line_no] = len(raw)
        return
    if not _is_event(value):
        st.violations.append(Violation(line_no, "not a patchgate event (no seq/prev_hash/hash)"))
        return
    problems = []
    if event_hash(value) != value["hash"]:
        problems.append("content does not match its hash: the event was modified after writing")
    _link(st, line_no, value, problems)
    if value.get("event") == EventKind.RECOVERED:
        problems.extend(_account_torn(st, value))
    else:
        _flag_pending(st)
    if problems:
        st.violations.append(Violation(line_no, "; ".join(problems)))
    st.events.append((line_no, value))


def _resume_refused(fh: BinaryIO, stat: os.stat_result, cp: ChainCheckpoint) -> str:
    """Why the checkpoint cannot be used, or "" if the verified prefix looks the same."""
    if (stat.st_ino, stat.st_dev) != (cp.inode, cp.device):
        return "the log file was replaced since the checkpoint"
    if stat.st_size < cp.offset:
        return "the log is shorter than at the checkpoint"
    fh.seek(cp.offset - cp.tail_len)
    if hashlib.sha256(fh.read(cp.tail_len)).hexdigest() != cp.tail_sha256:
        return "the last verified line changed since the checkpoint"
    return ""


def _sha256_of_prefix(fh: BinaryIO, size: int) -> Any:
    """A sha256 fed the first ``size`` bytes (reads them, parses nothing); None if shorter."""
    fh.seek(0)
    digest, left = hashlib.sha256(), size
    while left > 0:
        chunk = fh.read(min(left, 1 << 22))
        if not chunk:
            return None
        digest.update(chunk)
        left -= len(chunk)
    return digest


def _read_from(
    path: str, resume: ChainCheckpoint | None, check_prefix: bool = False
) -> tuple[bytes, int, str, tuple[int, int], Any]:
    """(bytes to parse, their offset, why a resume was refused, (inode, device), a sha256 fed
    the bytes before the offset, or None when they were not read)."""
    if not os.path.exists(path):
        return b"", 0, "the log file is missing" if resume else "", (-1, -1), hashlib.sha256()
    with open(path, "rb") as fh:
        stat = os.fstat(fh.fileno())
        reason = _resume_refused(fh, stat, resume) if resume else ""
        digest = None
        if resume and not reason and check_prefix:
            # A cryptographic digest: an edit that keeps a CRC (or the size and mtime) is seen.
            digest = _sha256_of_prefix(fh, resume.offset)
            if not resume.prefix_sha256:
                reason = "the checkpoint has no digest of the verified part of the log"
            elif digest is None or digest.hexdigest() != resume.prefix_sha256:
                reason = (
                    "the verified part of the log changed since the checkpoint (edited in place)"
                )
        offset = resume.offset if resume and not reason else 0
        if offset == 0:
            digest = hashlib.sha256()
        fh.seek(offset)
        data = fh.read(stat.st_size - offset)
        return data, offset, reason, (stat.st_ino, stat.st_dev), digest


def _check_anchor(st: _State, cp: ChainCheckpoint) -> None:
    """After a refused resume: the event the checkpoint ended on must still be in the chain.

    This catches what a full check alone cannot: a log cut short, or rewritten from some
    point on with every later hash recomputed.
    """
    if cp.last_seq < 0:
        return
    if not any(e["seq"] == cp.last_seq and e["hash"] == cp.last_hash for _, e in st.events):
        st.violations.append(
            Violation(
                cp.last_line_no,
                f"the event verified here earlier (seq {cp.last_seq}, hash "
                f"{cp.last_hash[:12]}) is gone: the log was cut short or rewritten",
            )
        )


def verify_chain(
    root: str, resume: ChainCheckpoint | None = None, *, check_prefix: bool = False
) -> ChainReport:
    """Check the whole chain, or with ``resume`` only what was appended after the checkpoint.

    Trade-off of ``resume``: it trusts that the verified prefix is unchanged when the file is the
    same inode, is at least as long, and still ends the prefix with the same last verified line.
    An in-place edit *inside* the prefix that keeps all three (e.g. ``dd conv=notrunc`` of equal
    length) is not seen by a resumed check; a full one sees it. Force a full check by passing
    ``resume=None`` (no stored checkpoint, or delete it), and do so periodically: the resumed
    check makes the frequent audit cheap, the full one keeps it honest. When a resume is refused
    the check is full, and the checkpoint's last event must still be in the chain.

    ``check_prefix`` closes that gap at the cost of reading (not parsing) the verified prefix:
    its sha256 must equal the checkpoint's, else the resume is refused (issue 12: a CRC-32 was
    forged with a 4-byte edit). It is no defence against a forger who also rewrites the
    checkpoint, who could as well delete it (only a copy kept elsewhere helps there).
    """
    data, offset, reason, file_id, digest = _read_from(log_path(root), resume, check_prefix)
    st = _state_from(resume) if resume and not reason else _State()
    *complete, partial = data.split(b"\n")
    for raw in complete:
        _check_line(st, raw)
    if resume and reason:
        _check_anchor(st, resume)
    if resume and not reason and not complete:
        checkpoint = resume  # nothing new since the checkpoint
    else:
        tail = complete[-1] + b"\n" if complete else b""
        end = offset + len(data) - len(partial)
        prefix = ""
        if digest is not None:
            digest.update(memoryview(data)[: end - offset])
            prefix = digest.hexdigest()
        checkpoint = _checkpoint_of(st, end, tail, file_id, prefix)
    if partial:  # a torn line, or a line being written right now: never in the checkpoint
        _check_line(st, partial)
    return ChainReport(
        events=st.events,
        violations=sorted(st.violations, key=lambda v: v.line_no),
        pending_torn=sorted(st.pending),
        checkpoint=checkpoint,
        lines_parsed=len(complete) + (1 if partial else 0),
        resumed=resume is not None and not reason,
        full_check_reason=reason,
    )


# --- recording by hand (doit record) ---------------------------------------------------------


def _property_schema(name: str) -> dict[str, Any]:
    spec = load_schema()
    prop = cast(dict[str, Any], spec["properties"].get(name, {}))
    ref = prop.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return cast(dict[str, Any], spec["$defs"][ref.removeprefix("#/$defs/")])
    return prop


def _coerce(name: str, text: str) -> Any:
    kind = _property_schema(name).get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        raise PatchgateError(
            STAGE, f"{name}={text!r} is not a valid {kind}; give a number"
        ) from None
    if kind == "boolean":
        if text.lower() not in (*_TRUE, *_FALSE):
            raise PatchgateError(STAGE, f"{name}={text!r} is not a boolean; use true or false")
        return text.lower() in _TRUE
    if kind == "array":
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def record_event(root: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """Append an event given as command-line strings (``doit record key=value ...``).

    Values are converted to the schema's types (integers, numbers, true/false, comma-separated
    lists); ``patch_id`` defaults to "-". The emergency procedure uses it for
    ``emergency_rollback``.
    """
    event = {name: _coerce(name, value) for name, value in fields.items()}
    event.setdefault("patch_id", NO_PATCH)
    if event.get("event") not in EVENT_KINDS:
        kinds = ", ".join(k for k in EVENT_KINDS if k != EventKind.RECOVERED)
        raise PatchgateError(STAGE, f"event={event.get('event')!r} is unknown; use one of {kinds}")
    return append_event(root, event)


# Evidence the doit commands write; nobody records them by hand (doit record refuses them too).
EVIDENCE_KINDS: dict[str, str] = {
    EventKind.VERIFY_PASS: "doit verify",
    EventKind.VERIFY_FAIL: "doit verify",
    EventKind.APPLY: "doit promote",
    EventKind.PROMOTE_FAIL: "doit promote",
    EventKind.ROLLBACK: "doit rollback",
    EventKind.RECOVERED: "the log itself",
    # issue 15: a proposal, a monitoring verdict and a pull request are evidence too
    EventKind.ROLLBACK_PROPOSED: "doit watch",
    EventKind.MONITOR: "doit watch",
    EventKind.PULL_REQUEST: "doit promote (landing: pull_request)",
}


def record_by_hand(root: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The fallback recorder's rules (issue 12): those of ``doit record``.

    Evidence kinds are refused; ``emergency_rollback`` gets doit record's own checks (a
    ``last_good`` commit on live's branch, a reason, an operator); other kinds (``propose`` from
    a patch source) are appended as given.
    """
    kind = fields.get("event", "").strip()
    if kind in EVIDENCE_KINDS:
        raise PatchgateError(
            STAGE,
            f"event={kind} is written by {EVIDENCE_KINDS[kind]}, never by hand; "
            "the fallback recorder writes emergency_rollback (and propose)",
        )
    if kind == EventKind.EMERGENCY_ROLLBACK:
        from . import audit, config  # audit imports this module

        cfg = config.load(root, {})
        event = audit.record(root, cfg.live_repo, cfg["branch"], dict(fields))
        return {"event": kind, **event["summary"]}
    return record_event(root, fields)


def main(argv: Sequence[str]) -> int:
    """``python -m patchgate.provenance record key=value ... | verify``: when doit is down."""
    try:
        if argv[:1] == ["record"]:
            pairs = [arg.partition("=") for arg in argv[1:]]
            if any(not sep for _, sep, _ in pairs):
                raise PatchgateError(
                    STAGE, "arguments are key=value pairs; write e.g. event=propose patch_id=P"
                )
            event = record_by_hand(os.getcwd(), {k: v for k, _, v in pairs})
            if event["event"] != "emergency_rollback":  # audit.record says it itself
                print(f"recorded {event['event']} as seq {event['seq']} in {LOG_PATH}")
            return 0
        if argv[:1] == ["verify"]:
            report = verify_chain(os.getcwd())
            for v in report.violations:
                print(f"{LOG_PATH}:{v.line_no}: {v.message}")
            print(f"{len(report.events)} events, {len(report.violations)} violations")
            return 0 if report.ok else 1
        print(
            "usage: python -m patchgate.provenance record key=value ... | verify", file=sys.stderr
        )
        return 2
    except PatchgateError as exc:
        print(f"STAGE: {exc.stage}\nREASON: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
