"""The waterfall history the bus keeps for pages that open later: the last window of data by
the rows' own timestamps, bounded per selection and in selections, a group read again replacing
its rows."""

from __future__ import annotations

from contimg.bus import StatusBus, Waterfall, WaterfallHistory


def _event(group: str, start_mjd: float, selection: str = "avg", pol: str = "XX", n: int = 24) -> Waterfall:
    times = [start_mjd + k * 12.88 / 86400 for k in range(n)]
    return Waterfall(group, selection, pol, times, [1400.0, 1401.0], [[1.0, 2.0]] * n, [[0.0, 0.5]] * n)


def test_history_keeps_the_last_window_of_data_time():
    h = WaterfallHistory(window_s=3600.0)
    step = 309.12 / 86400  # a group's span
    events = [_event(f"g{i:02d}", 60000.0 + i * step) for i in range(20)]
    for e in events:
        h.add(e)
    kept = h.events(("avg", "XX"))
    newest_end = events[-1].time_mjd[-1]
    # every group whose last row lies within the hour before the newest row, and no other
    want = [e for e in events if (newest_end - e.time_mjd[-1]) * 86400 <= 3600.0]
    assert [e.group_id for e in kept] == [e.group_id for e in want]
    assert 11 <= len(kept) <= 13
    assert h.events(("avg", "YY")) == []


def test_history_is_bounded_and_replaces_a_group_read_again():
    h = WaterfallHistory(window_s=1e6, max_events=5, max_selections=3)
    for i in range(8):
        h.add(_event(f"g{i}", 60000.0 + i * 0.01))
    assert [e.group_id for e in h.events(("avg", "XX"))] == ["g3", "g4", "g5", "g6", "g7"]
    again = _event("g5", 60000.05)
    h.add(again)
    kept = h.events(("avg", "XX"))
    assert [e.group_id for e in kept] == ["g3", "g4", "g5", "g6", "g7"] and kept[2] is again
    for sel in ("ant:1", "ant:2", "ant:3"):  # a fourth selection pushes out the least recently updated
        h.add(_event("g9", 60001.0, selection=sel))
    assert h.events(("avg", "XX")) == [] and len(h.events(("ant:3", "XX"))) == 1


def test_bus_keeps_waterfalls_out_of_the_recent_events_but_in_the_history():
    bus = StatusBus()
    e = _event("g0", 60000.0)
    bus.publish(e)
    assert e not in bus.recent and bus.waterfalls.events(("avg", "XX")) == [e]
