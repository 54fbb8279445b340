"""WebSockets: ``/ws/status`` pushes the status bus, ``/ws/waterfall`` the waterfall rows of the
selection a client asks for: first a ``window`` message (how much history the page keeps), the
rows of the last ``web.waterfall_history_s`` of data, then each new group's rows as it is read."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from contimg.bus import EVENT_TYPES, parse_selection
from contimg.web.context import ws_context_of

__all__ = ["router"]

router = APIRouter()


_texts: OrderedDict[int, tuple[object, str]] = OrderedDict()  # id → (waterfall event, its JSON), the latest 64


def _text(event) -> str:
    """The event as JSON; a waterfall event (large, sent to every client watching its selection
    and again to each page that opens within the history window) is encoded once."""
    if event.type != "waterfall":
        return json.dumps(event.to_dict(), default=float)
    hit = _texts.get(id(event))
    if hit is not None and hit[0] is event:
        return hit[1]
    text = json.dumps(event.to_dict(), default=float)
    _texts[id(event)] = (event, text)
    while len(_texts) > 64:
        _texts.popitem(last=False)
    return text


async def _pump(ws: WebSocket, sub) -> None:
    """Send the subscription's events until the client goes."""
    while True:
        await ws.send_text(_text(await sub.get()))


async def _until_either(*coros) -> None:
    """Run the coroutines (a sender and a receiver) until one ends, then cancel the other."""
    tasks = {asyncio.create_task(c) for c in coros}
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()


async def _drain_client(ws: WebSocket) -> None:
    """Read (and ignore) what a status client sends, so that a close is noticed."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


@router.websocket("/ws/status")
async def ws_status(ws: WebSocket, types: str | None = None) -> None:
    ctx = ws_context_of(ws)
    wanted = set(types.split(",")) if types else set(EVENT_TYPES) - {"waterfall"}
    if not wanted <= set(EVENT_TYPES):
        await ws.close(code=1008, reason=f"unknown event types {sorted(wanted - set(EVENT_TYPES))}")
        return
    await ws.accept()
    sub = ctx.bus.subscribe(maxsize=ctx.cfg.client_queue, types=wanted)
    ctx.ws_clients += 1
    try:
        for e in [e for e in ctx.bus.recent if e.type in wanted][-50:]:  # the latest 50 of the kinds asked for
            await ws.send_text(_text(e))
        await _until_either(_pump(ws, sub), _drain_client(ws))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        ctx.bus.unsubscribe(sub)
        ctx.ws_clients -= 1


@router.websocket("/ws/waterfall")
async def ws_waterfall(ws: WebSocket, select: str = "avg", pol: str = "XX") -> None:
    """Rows of the selection (``avg``, ``ant:N``, ``bl:A-B``) and polarization (XX, YY, I);
    the client may send ``{"select": ..., "pol": ...}`` to change them."""
    ctx = ws_context_of(ws)
    try:
        parse_selection(select)
    except ValueError as exc:
        await ws.close(code=1008, reason=str(exc))
        return
    await ws.accept()
    current = {"key": (select, pol.upper())}
    ctx.watch_waterfall(current["key"], +1)
    sub = ctx.bus.subscribe(maxsize=ctx.cfg.client_queue, types={"waterfall"})
    ctx.ws_clients += 1

    async def send_latest():
        """The selection's window of history (``web.waterfall_history_s`` of data), oldest first;
        at least the latest group's rows."""
        await ws.send_text(json.dumps({"type": "window", "window_s": ctx.cfg.waterfall_history_s,
                                       "select": current["key"][0], "pol": current["key"][1]}))
        events = ctx.bus.waterfalls.events(current["key"])
        if not events:
            latest = ctx.last_waterfall(current["key"])
            events = [latest] if latest is not None else []
        for e in events:
            await ws.send_text(_text(e))

    async def sender():
        while True:
            e = await sub.get()
            if (e.selection, e.pol) == current["key"]:
                await ws.send_text(_text(e))

    async def receiver():
        while True:
            msg = await ws.receive_text()
            try:
                req = json.loads(msg)
                key = (str(req.get("select", current["key"][0])), str(req.get("pol", current["key"][1])).upper())
                parse_selection(key[0])
                if key[1] not in ("XX", "YY", "I"):
                    raise ValueError(f"waterfall polarization {key[1]!r}: XX, YY or I")
            except (ValueError, AttributeError, json.JSONDecodeError) as exc:
                await ws.send_text(json.dumps({"type": "error", "message": str(exc)}))
                continue
            ctx.watch_waterfall(current["key"], -1)
            current["key"] = key
            ctx.watch_waterfall(key, +1)
            await ws.send_text(json.dumps({"type": "selected", "select": key[0], "pol": key[1]}))
            await send_latest()

    try:
        await send_latest()
        await _until_either(sender(), receiver())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        ctx.bus.unsubscribe(sub)
        ctx.watch_waterfall(current["key"], -1)
        ctx.ws_clients -= 1
