"""Links a browser can open: executed notebooks by URL, without the X-API-Key header a click cannot send.

A link is the notebook route's path with `expires` (Unix seconds) and `signature`, an HMAC-SHA256 of the
path and expiry under a key derived from the server's API keys (or SERVE_LINK_SECRET where replicas with
different keys must accept each other's links). So only a caller that already holds a read key can get a
link (it comes in lineage answers), a link opens nothing but that one page, and it stops working after
SERVE_LINK_TTL seconds or when the keys change. URLs carry the root path, so they work behind nginx (/api).

Executed notebooks are untrusted content: any job's output can carry HTML and script. They are served with
`Content-Security-Policy: sandbox allow-scripts allow-popups` (no allow-same-origin), so their scripts run in
an opaque origin: no cookies of the platform's origin, no credentials, no same-origin reads of the API,
JupyterLab or the dashboards. Static outputs, tables and images render as before.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse

NOTEBOOK_CSP: Final = (
    "sandbox allow-scripts allow-popups; default-src 'none'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; font-src 'self' data:"
)


class NotebookHTML(HTMLResponse):
    """An executed notebook rendered as HTML: untrusted, so sandboxed into an opaque origin."""

    def __init__(self, content: bytes | str, status_code: int = 200) -> None:
        super().__init__(
            content,
            status_code=status_code,
            headers={
                "Content-Security-Policy": NOTEBOOK_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "private, no-store",
            },
        )


class LinkSigner:
    def __init__(self, keys: Iterable[str], secret: str | None, ttl_seconds: float):
        material = secret.encode() if secret else b"\0".join(sorted(k.encode() for k in keys))
        self._key = hashlib.sha256(b"notebook-jobs link v1\0" + material).digest()
        self.ttl = ttl_seconds

    def _mac(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str, *, root_path: str = "", now: float | None = None) -> str:
        """`root_path + path?expires=...&signature=...`; `path` is the route path without the root path."""
        expires = int((time.time() if now is None else now) + self.ttl)
        query = urlencode({"expires": expires, "signature": self._mac(path, expires)})
        return f"{root_path}{path}?{query}"

    def check(
        self, path: str, expires: str | None, signature: str | None, *, now: float | None = None
    ) -> str:
        """'' when the link is valid, else why not (for the 401's message)."""
        if not expires or not signature:
            return "missing"
        try:
            when = int(expires)
        except ValueError:
            return "its expiry is not a number"
        if when < (time.time() if now is None else now):
            return "it has expired: ask the API for a fresh one (lineage answers carry one)"
        if not hmac.compare_digest(self._mac(path, when), signature):
            return "its signature does not match"
        return ""


def sign_notebook_links(lineage: Any, signer: LinkSigner, root_path: str) -> Any:
    """A copy of a lineage answer whose notebook `html_url`s are signed, root-path-aware links."""
    if isinstance(lineage, dict):
        out = {k: sign_notebook_links(v, signer, root_path) for k, v in lineage.items()}
        url = out.get("html_url")
        if isinstance(url, str) and url.startswith("/") and "?" not in url:
            out["html_url"] = signer.sign(url, root_path=root_path)
        return out
    if isinstance(lineage, list):
        return [sign_notebook_links(v, signer, root_path) for v in lineage]
    return lineage
