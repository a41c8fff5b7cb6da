"""Each replica's share of the work during a step, from its own Prometheus /metrics.

CPU seconds say what a process cost; these counters say what it did. A message replica's share is its
growth of `chat_fanout_events_total` (events it fanned out) over the step; an edge's is its growth of
`chat_delivery_lag_seconds_count` (events it pushed onto client sockets: one observation per push),
and of any `chat_websocket_frames*_total` counter an edge may serve. A replica that does not serve a
series is reported as absent ("n/a" in the table), never as 0%: an older build without the counter
must not read as a replica that did nothing.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

FANOUT = "chat_fanout_events_total"
EDGE_PUSHED = "chat_delivery_lag_seconds_count"
EDGE_FRAMES_PREFIX = "chat_websocket_frames"

Counters = dict[str, dict[str, float]]  # instance -> series name -> value (labels summed)


def _parse(text: str) -> dict[str, float]:
    """Sample name -> value, labels summed."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def wanted(name: str) -> bool:
    return name in (FANOUT, EDGE_PUSHED) or (name.startswith(EDGE_FRAMES_PREFIX) and name.endswith("_total"))


def scrape(urls: dict[str, str], timeout_s: float = 3.0) -> Counters:
    """The counters this module reads, per instance; an instance that does not answer is left out."""
    out: Counters = {}
    for name, url in urls.items():
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as reply:
                text = reply.read().decode("utf-8", "replace")
        except OSError:
            continue
        out[name] = {k: v for k, v in _parse(text).items() if wanted(k)}
    return out


def _percent(parts: dict[str, float | None]) -> dict[str, float | None]:
    known = {k: v for k, v in parts.items() if v is not None}
    total = sum(known.values())
    return {k: (round(100 * v / total, 1) if v is not None and total > 0 else None) for k, v in parts.items()}


def shares(before: Counters, after: Counters, instances: list[str], series: str) -> dict[str, float | None]:
    """Each instance's growth of `series` between the scrapes (None where it was not served)."""
    return {
        name: (after[name][series] - before.get(name, {}).get(series, 0.0) if series in after.get(name, {}) else None)
        for name in instances
    }


def summarize(before: Counters, after: Counters, messages: list[str], edges: list[str]) -> dict[str, object]:
    """`fanout_events` / `fanout_share_pct` per message replica, `pushed_events` / `pushed_share_pct`
    per edge, plus any edge frame counters' growth; None marks a series the instance does not serve."""
    fanout = shares(before, after, messages, FANOUT)
    pushed = shares(before, after, edges, EDGE_PUSHED)
    frame_series = sorted({k for e in edges for k in after.get(e, {}) if k.startswith(EDGE_FRAMES_PREFIX)})
    return {
        "fanout_events": fanout,
        "fanout_share_pct": _percent(fanout),
        "pushed_events": pushed,
        "pushed_share_pct": _percent(pushed),
        "edge_frames": {s: shares(before, after, edges, s) for s in frame_series},
    }
