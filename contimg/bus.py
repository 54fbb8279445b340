"""The status bus: typed events from every stage and task, fanned out to subscribers (the web
view's WebSockets, `contimg status`'s health file, tests). Each subscriber has a small bounded
queue that drops its oldest event when full, so a slow or dead subscriber never slows the
pipeline. Publishing is for the event loop's thread; worker threads use `publish_threadsafe`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)

__all__ = ["Event", "GroupState", "StageTiming", "QAResult", "Alert", "Health", "Waterfall", "StatusBus",
           "Subscription", "WaterfallHistory", "EVENT_TYPES", "parse_selection"]


@dataclass(frozen=True)
class Event:
    @property
    def type(self) -> str:
        return _TYPES[type(self)]

    def to_dict(self) -> dict:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class GroupState(Event):
    """A group changed state (collecting, pending, in_progress, completed, failed)."""

    group_id: str
    state: str
    stage: str = ""
    error: str = ""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StageTiming(Event):
    """A stage started (``seconds`` = 0) or finished for a group."""

    group_id: str
    stage: str
    status: str  # "started" | "finished" | "failed"
    seconds: float = 0.0
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class QAResult(Event):
    group_id: str
    metrics: dict
    passed: bool = True
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Alert(Event):
    severity: str  # "info" | "warning" | "critical"
    category: str
    message: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Health(Event):
    task: str
    state: str  # "ok" | "degraded" | "failed" | "stopped"
    detail: str = ""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Waterfall(Event):
    """Amplitude rows (time × frequency bins) of one group as it was read, for one selection
    (``avg``: every cross-correlation; ``ant:N``: those of antenna N; ``bl:A-B``: one baseline)
    and polarization; ``flagged`` is the flagged fraction of each cell."""

    group_id: str
    selection: str
    pol: str
    time_mjd: list
    freq_mhz: list
    amp: list  # (ntime, nbins), NaN where everything is flagged
    flagged: list  # (ntime, nbins) in [0, 1]
    at: float = field(default_factory=time.time)


_TYPES = {GroupState: "group_state", StageTiming: "stage_timing", QAResult: "qa", Alert: "alert", Health: "health",
          Waterfall: "waterfall"}
EVENT_TYPES = tuple(_TYPES.values())
_NOT_KEPT = {"waterfall"}  # too big for the history; the web view keeps the latest per selection


class Subscription:
    """One subscriber's bounded queue; ``dropped`` counts events it lost by being slow."""

    def __init__(self, maxsize: int, types: set[str] | None):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.types = types
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self.types is not None and event.type not in self.types:
            return
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1

    async def get(self) -> Event:
        return await self.queue.get()


class WaterfallHistory:
    """The waterfall events of the last ``window_s`` of data (by the rows' own timestamps, not
    the wall clock: a replay at 100× keeps the same hour of data) for each (selection, pol), so
    that a page opening later starts with the whole window. Bounded: at most ``max_events``
    events per selection and ``max_selections`` selections (the least recently updated go)."""

    def __init__(self, *, window_s: float = 3600.0, max_events: int = 64, max_selections: int = 16):
        self.window_s = window_s
        self.max_events = max_events
        self.max_selections = max_selections
        self._by_key: dict[tuple[str, str], deque[Waterfall]] = {}

    def add(self, event: Waterfall) -> None:
        key = (event.selection, event.pol)
        events = self._by_key.pop(key, None) or deque(maxlen=self.max_events)
        self._by_key[key] = events  # most recently updated last
        if any(e.group_id == event.group_id for e in events):  # a group read again (reprocess)
            events = deque((e for e in events if e.group_id != event.group_id), maxlen=self.max_events)
            self._by_key[key] = events
        events.append(event)
        newest = max(e.time_mjd[-1] for e in events if e.time_mjd)
        while events and events[0].time_mjd and newest - events[0].time_mjd[-1] > self.window_s / 86400.0:
            events.popleft()
        while len(self._by_key) > self.max_selections:
            del self._by_key[next(iter(self._by_key))]

    def events(self, key: tuple[str, str]) -> list[Waterfall]:
        """The key's events in time order."""
        return sorted(self._by_key.get(key, ()), key=lambda e: e.time_mjd[0] if e.time_mjd else 0.0)


class StatusBus:
    def __init__(self, *, history: int = 500):
        self._subs: list[Subscription] = []
        self.recent: deque[Event] = deque(maxlen=history)
        self.waterfalls = WaterfallHistory()  # the web view sets its window (web.waterfall_history_s)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, *, maxsize: int = 100, types: set[str] | None = None) -> Subscription:
        sub = Subscription(maxsize, types)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        if event.type not in _NOT_KEPT:
            self.recent.append(event)
        elif isinstance(event, Waterfall):
            self.waterfalls.add(event)
        for sub in list(self._subs):
            sub.offer(event)

    def publish_threadsafe(self, event: Event) -> None:
        if self._loop is None:
            self.publish(event)
        else:
            self._loop.call_soon_threadsafe(self.publish, event)


# The waterfall's selections, as the web view asks for them and the service computes them
_SEL = re.compile(r"^(avg|ant:(\d{1,3})|bl:(\d{1,3})-(\d{1,3}))$")


def parse_selection(selection: str) -> tuple[str, tuple[int, ...]]:
    """``avg`` | ``ant:N`` | ``bl:A-B`` (antenna numbers) → (kind, numbers); ValueError otherwise."""
    m = _SEL.match(selection)
    if not m:
        raise ValueError(f"waterfall selection {selection!r}: expected avg, ant:N or bl:A-B")
    if m.group(2):
        return "ant", (int(m.group(2)),)
    if m.group(3):
        return "bl", (int(m.group(3)), int(m.group(4)))
    return "avg", ()
