"""A tiny ASGI app standing in for a backend behind nginx: echoes what the proxy sent, and a websocket.

HTTP: any path answers JSON with the path, query and the request headers the proxy set.
Websocket: accepts, reports the path and headers, then echoes every text message.
"""

from __future__ import annotations

import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    # raw_path is what came over the wire (uvicorn --root-path prefixes scope["path"] with the root path)
    raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    info = {
        "path": scope["path"],
        "raw_path": raw,
        "query": scope.get("query_string", b"").decode(),
        "headers": headers,
    }
    if scope["type"] == "http":
        body = json.dumps({**info, "status": "ok"}).encode()
        # A header nginx must replace with its own (a backend's X-Frame-Options would duplicate nginx's).
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"x-frame-options", b"DENY")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(info)})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + (message.get("text") or "")})
