"""Pieces every dashboard uses: HTML helpers, the status banner, error guards and matplotlib plots as PNG.

Plots are rendered by matplotlib (Agg) into PNG bytes shown in `ipywidgets.Image`: static images need no
JavaScript library and no CDN, so they draw the same in Voila offline, in JupyterLab and in a test.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as w

from dashboards.client import ApiError, PlatformClient

STATE_COLOURS = {
    "QUEUED": "#6b7280",
    "RUNNING": "#2563eb",
    "CANCELLING": "#d97706",
    "SUCCEEDED": "#15803d",
    "FAILED": "#b91c1c",
    "CANCELLED": "#6b7280",
}
DRIFT_COLOURS = {"stable": "#15803d", "watch": "#d97706", "drift": "#b91c1c"}
ACCENT = "#2563eb"
CSS = """<style>
.dash-banner{padding:10px 14px;border-radius:6px;margin:6px 0;font-size:14px;line-height:1.4}
.dash-banner-error{background:#fef2f2;border:1px solid #fca5a5;color:#7f1d1d}
.dash-banner-warn{background:#fffbeb;border:1px solid #fcd34d;color:#78350f}
.dash-card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;margin:6px 0;background:#fff}
.dash-muted{color:#6b7280;font-size:12px}
.dash-big{font-size:22px;font-weight:600}
.dash-table{border-collapse:collapse;font-size:13px}
.dash-table th{text-align:left;padding:3px 10px;border-bottom:2px solid #e5e7eb;color:#374151}
.dash-table td{padding:3px 10px;border-bottom:1px solid #f3f4f6}
.dash-id{display:inline-block;max-width:10ch;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
 vertical-align:bottom;font-family:monospace;user-select:all;cursor:copy}
</style>"""


def e(value: Any) -> str:
    return html.escape(str(value))


def error_html(message: str) -> str:
    return (
        f'<div class="dash-error" style="color:#b91c1c;white-space:pre-wrap"><b>Error:</b> {e(message)}</div>'
    )


def banner_html(message: str, level: str = "error") -> str:
    return f'<div class="dash-banner dash-banner-{level}" role="alert">{message}</div>'


def api_banner(exc: ApiError) -> str:
    """A banner that says what is wrong with the API and what to do."""
    if exc.unreachable:
        return banner_html(
            f"<b>The API cannot be reached.</b> {e(exc)}<br>Start it (<code>make serve</code>) or set "
            "<code>DASHBOARD_API_URL</code>, then reload this page."
        )
    if exc.status == 503:
        return banner_html(
            f"<b>No champion model is being served yet.</b> {e(exc)}<br>Run the pipeline "
            "(<code>make demo</code>) or promote a model to the served alias; the API picks it up by itself.",
            "warn",
        )
    if exc.status in (401, 403):
        return banner_html(f"<b>The API refused this dashboard's key.</b> {e(exc)}")
    return banner_html(f"<b>The API answered an error.</b> {e(exc)}")


def table(headers: list[str], rows: list[list[str]], css_class: str) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (
        f'<table class="dash-table {css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def full_id(value: str, title: str = "") -> str:
    """The whole id in the page (copy and hover give all of it), drawn shortened."""
    return f'<span class="dash-id" title="{e(title or value)}">{e(value)}</span>'


def short_time(value: str | datetime | None) -> str:
    if not value:
        return "?"
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def guarded(target: w.HTML, action: Callable[[], str]) -> bool:
    """Run `action` and show its HTML, or the explanation of what went wrong; True when it worked."""
    try:
        target.value = action()
        return True
    except ApiError as exc:
        target.value = api_banner(exc) if exc.unreachable else error_html(str(exc))
    except (ValueError, OSError) as exc:
        target.value = error_html(str(exc))
    return False


def connect(api: PlatformClient | None) -> PlatformClient | w.VBox:
    """The given client, or one from the settings; a page with the reason when that fails."""
    if api is not None:
        return api
    try:
        return PlatformClient.from_env()
    except ApiError as exc:
        return w.VBox([w.HTML(CSS), w.HTML(banner_html(f"<b>Dashboard settings:</b> {e(exc)}"))])


# -- plots --------------------------------------------------------------------------------------------
def new_figure(width: float = 7.5, height: float = 3.0) -> Any:
    """A matplotlib Figure not registered with pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_widget(css_class: str) -> w.Image:
    image = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))
    image.add_class("dash-plot")
    image.add_class(css_class)
    return image


def empty_plot(message: str, width: float = 7.5, height: float = 1.2) -> bytes:
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#6b7280", fontsize=11)
    return png(fig)


def style_axes(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
