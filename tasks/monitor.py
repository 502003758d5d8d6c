"""Time-based monitoring: a stability metric after a landing (``monitoring:``, off by default).

``doit watch`` samples the metric every ``monitoring.interval`` seconds for
``monitoring.window_hours`` after each landing, from either

* the Prometheus query API (``kind: prometheus``): ``GET URL/api/v1/query?query=QUERY``; the
  lowest value among the series the query returns; or
* a JSON endpoint (``kind: json``): ``GET URL``, the number at ``key_path`` (``a.b.0.c``).

A value below ``stability_threshold`` is a breach; ``failure_limit`` breaches in a row (among
conclusive samples) make a rollback proposal (``watch.propose``, source "metrics"). No data,
NaN, a non-number, an HTTP error or a timeout is *inconclusive*: never a breach, and it neither
advances nor resets the run of breaches. ``inconclusive_limit`` inconclusive samples in a row
escalate once as "monitoring blind". Provenance events ``monitor`` record the outcome:
``breach``, ``blind``, and at the end of the window ``pass`` or ``inconclusive`` (no conclusive
sample, or blind at the end).

State: ``patches/.state/watch/<sha>.metrics.json``.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import config, provenance, redact
from .errors import PatchgateError
from .steps import read_json, write_json

if TYPE_CHECKING:  # imported where a sample is taken: not on every doit command's load
    import httpx

WATCH_DIR = os.path.join("patches", ".state", "watch")
KEEP_VALUES = 20


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool
    kind: str
    url: str
    query: str
    key_path: str
    threshold: float
    failure_limit: int
    inconclusive_limit: int
    interval: float
    window_hours: float
    timeout: float

    @property
    def metric(self) -> str:
        return self.query if self.kind == "prometheus" else f"{self.url} {self.key_path}"


def monitor_settings(cfg: config.Config) -> MonitorSettings:
    values = {**config.DEFAULTS["monitoring"][0], **(cfg["monitoring"] or {})}
    enabled = bool(values["enabled"])
    if enabled:
        what = "query" if values["kind"] == "prometheus" else "key_path"
        missing = [k for k in ("url", what, "stability_threshold") if values.get(k) in (None, "")]
        if missing:
            raise PatchgateError(
                "CONFIG",
                f"monitoring is enabled but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set; set "
                f"monitoring.{missing[0]} in patchgate.yaml (or monitoring.enabled: false)",
            )
    return MonitorSettings(
        enabled=enabled,
        kind=str(values["kind"]),
        url=str(values["url"] or "").rstrip("/"),
        query=str(values["query"] or ""),
        key_path=str(values["key_path"] or ""),
        threshold=float(values["stability_threshold"] or 0.0),
        failure_limit=int(values["failure_limit"]),
        inconclusive_limit=int(values["inconclusive_limit"]),
        interval=float(values["interval"]),
        window_hours=float(values["window_hours"]),
        timeout=float(values["timeout"]),
    )


@dataclass(frozen=True)
class Sample:
    value: float | None  # None: inconclusive
    why: str = ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def sample(settings: MonitorSettings, transport: httpx.BaseTransport | None = None) -> Sample:
    """One reading of the metric; anything but a real number is inconclusive (with why)."""
    import httpx

    try:
        with httpx.Client(timeout=settings.timeout, transport=transport) as http:
            if settings.kind == "prometheus":
                reply = http.get(f"{settings.url}/api/v1/query", params={"query": settings.query})
            else:
                reply = http.get(settings.url)
        if reply.status_code != 200:
            return Sample(None, f"HTTP {reply.status_code}")
        data = reply.json()
    except httpx.HTTPError as exc:
        return Sample(None, f"{type(exc).__name__}: {redact.redact(str(exc))[:120]}")
    except ValueError:
        return Sample(None, "malformed JSON")
    if settings.kind == "prometheus":
        return _prometheus_value(data)
    return _json_value(data, settings.key_path)


def _prometheus_value(data: Any) -> Sample:
    if not isinstance(data, dict) or data.get("status") != "success":
        return Sample(None, f"query failed: {str(data)[:120]}")
    body = data.get("data") or {}
    kind, result = body.get("resultType"), body.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        number = _number(result[1])
        return Sample(number, "" if number is not None else "NaN")
    if kind != "vector" or not isinstance(result, list):
        return Sample(None, f"unexpected result type {kind}")
    numbers = []
    for series in result:
        value = series.get("value") if isinstance(series, dict) else None
        if isinstance(value, list) and len(value) == 2:
            number = _number(value[1])
            if number is not None:
                numbers.append(number)
    if not numbers:
        return Sample(None, "no data" if not result else "NaN")
    return Sample(min(numbers))


def _json_value(data: Any, key_path: str) -> Sample:
    node = data
    for part in key_path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return Sample(None, f"no {key_path} in the answer")
    number = _number(node)
    return Sample(number, "" if number is not None else f"{key_path} is not a number: {node!r}")


@dataclass
class MonitorState:
    sha: str
    samples: int = 0
    breaches: int = 0  # in a row, among conclusive samples
    inconclusive: int = 0  # in a row
    conclusive: int = 0
    blind: bool = False
    last_sample_at: float = 0.0
    values: list[float | None] = field(default_factory=list)
    outcome: str | None = None  # "breach" | "pass" | "inconclusive"


@dataclass(frozen=True)
class Outcome:
    done: bool
    # (check, conclusion, details_url, first_failing_test) for watch.Failure, on a breach
    failure: tuple[str, str, str | None, str | None] | None = None


def state_path(root: str, sha: str) -> str:
    return os.path.join(root, WATCH_DIR, f"{sha}.metrics.json")


def load_state(root: str, sha: str) -> MonitorState:
    with contextlib.suppress(OSError, ValueError, TypeError):
        return MonitorState(**read_json(state_path(root, sha)))
    return MonitorState(sha)


def record(
    root: str, sha: str, patch_id: str, outcome: str, s: MonitorSettings, st: MonitorState
) -> None:
    event: dict[str, Any] = {
        "event": provenance.EventKind.MONITOR,
        "patch_id": patch_id,
        "sha": sha,
        "outcome": outcome,
        "failure": {"metric": s.metric, "values": st.values[-KEEP_VALUES:]},
        "failure_context": (
            f"metrics: {s.metric}: {st.samples} samples, {st.conclusive} conclusive, threshold "
            f"{s.threshold:g}"
        ),
    }
    provenance.append_event(root, event)


def poll(
    root: str,
    sha: str,
    patch_id: str,
    landed_at: float,
    settings: MonitorSettings,
    now: float,
    log: str,
    transport: httpx.BaseTransport | None = None,
) -> Outcome:
    """Sample the metric of one landing if its interval has passed; judge; record events."""
    st = load_state(root, sha)
    short = sha[:12]
    if st.outcome is not None:
        return Outcome(True)
    if now - landed_at > settings.window_hours * 3600:
        st.outcome = "pass" if st.conclusive and not st.blind else "inconclusive"
        record(root, sha, patch_id, st.outcome, settings, st)
        write_json(state_path(root, sha), asdict(st))
        redact.tell(log, f"monitor: {short}: window ended: {st.outcome} ({st.samples} samples)")
        return Outcome(True)
    if st.last_sample_at and now - st.last_sample_at < settings.interval:
        return Outcome(False)
    got = sample(settings, transport)
    st.samples += 1
    st.last_sample_at = now
    st.values = [*st.values, got.value][-KEEP_VALUES:]
    failure = None
    if got.value is None:
        st.inconclusive += 1
        redact.tell(log, f"monitor: {short}: inconclusive sample: {got.why}")
        if st.inconclusive >= settings.inconclusive_limit and not st.blind:
            st.blind = True
            record(root, sha, patch_id, "blind", settings, st)
            redact.tell(
                log,
                f"monitor: {short}: MONITORING BLIND: {st.inconclusive} inconclusive samples "
                f"in a row ({got.why}); check monitoring.url and the exporter",
            )
    else:
        st.inconclusive = 0
        st.blind = False
        st.conclusive += 1
        if got.value < settings.threshold:
            st.breaches += 1
            redact.tell(
                log,
                f"monitor: {short}: breach {st.breaches} of {settings.failure_limit}: "
                f"{got.value:g} < {settings.threshold:g}",
            )
            if st.breaches >= settings.failure_limit:
                st.outcome = "breach"
                record(root, sha, patch_id, "breach", settings, st)
                values = ", ".join(f"{v:g}" for v in st.values[-st.breaches :] if v is not None)
                failure = (
                    settings.metric,
                    f"{st.breaches} samples below {settings.threshold:g} ({values})",
                    settings.url,
                    None,
                )
        else:
            st.breaches = 0
    write_json(state_path(root, sha), asdict(st))
    return Outcome(st.outcome is not None, failure)
