"""Model monitoring: live accuracy over time, prediction volume, champion history and feature drift.

Four plots (matplotlib PNGs) and the drift table, all from the API: `GET /v1/monitoring/timeline` (live
metric after each label, volume per bucket, retraining events), `GET /v1/monitoring/versions` (champion
history), `GET /v1/predictions` (recent rows, compared with the reference data by dashboards.drift).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import ipywidgets as w
import numpy as np

from dashboards.client import ApiError, PlatformClient
from dashboards.drift import BOOLEAN, CATEGORICAL, DRIFT, WATCH, FeatureDrift, as_numbers, category_shares
from dashboards.drift import drift_report as _drift_report
from dashboards.reference import feature_specs, load_reference
from dashboards.widgets import (
    ACCENT,
    CSS,
    DRIFT_COLOURS,
    api_banner,
    connect,
    e,
    empty_plot,
    error_html,
    new_figure,
    plot_widget,
    png,
    short_time,
    style_axes,
    table,
)

VERSION_COLOURS = ["#2563eb", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c"]


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


# matplotlib ships py.typed, but matplotlib.dates has no annotations (no dates.pyi): its calls are
# wrapped here, each ignore limited to the untyped call.
def _date_num(value: datetime) -> float:
    """The matplotlib date number of `value` (days since matplotlib's epoch)."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(value))  # type: ignore[no-untyped-call]  # unannotated in matplotlib


def _date_axis(ax: Any, lo: datetime, hi: datetime) -> None:
    """Dates on the x axis over the data's own range (at least ten minutes, so one point is readable)."""
    import matplotlib.dates as mdates

    start, end = _date_num(lo), _date_num(hi)
    if end - start < 10 / 1440:
        middle = (start + end) / 2
        start, end = middle - 5 / 1440, middle + 5 / 1440
    pad = (end - start) * 0.03
    ax.set_xlim(start - pad, end + pad)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)  # type: ignore[no-untyped-call]  # see above
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]  # see _date_num
    ax.xaxis.set_major_formatter(formatter)


def accuracy_png(timeline: dict[str, Any], versions: list[dict[str, Any]]) -> bytes:
    points = timeline["points"]
    metric = "live accuracy" if timeline["metric"] == "accuracy" else "live MAE"
    if not points:
        return empty_plot(f"No feedback labels yet: the {metric} appears here after POST /v1/feedback.")
    fig = new_figure(7.5, 3.0)
    ax = fig.add_subplot()
    by_version: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        by_version.setdefault(p["version"], []).append(p)
    for i, (version, pts) in enumerate(
        sorted(by_version.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)
    ):
        ax.plot(
            [_when(p["at"]) for p in pts],
            [p["value"] for p in pts],
            marker="o",
            markersize=2.5,
            linewidth=1.5,
            color=VERSION_COLOURS[i % len(VERSION_COLOURS)],
            label=f"v{version}",
        )
    if timeline.get("threshold") is not None:
        ax.axhline(
            timeline["threshold"],
            color="#b91c1c",
            linestyle="--",
            linewidth=1,
            label=f"retraining threshold {timeline['threshold']:.2f}",
        )
    lo, hi = _when(points[0]["at"]), _when(points[-1]["at"])
    for r in timeline["retrains"]:
        at = _when(r["at"])
        ax.axvline(at, color="#d97706", linewidth=1.2, linestyle=":")
        lo, hi = min(lo, at), max(hi, at)
    for v in versions:
        if (
            v.get("registered_at")
            and v.get("decision") == "promoted"
            and lo <= _when(v["registered_at"]) <= hi
        ):
            ax.axvline(_when(v["registered_at"]), color="#15803d", linewidth=1.2)
    handles, labels = ax.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="#d97706", linestyle=":"), Line2D([], [], color="#15803d")]
    labels += ["retraining", "new champion"]
    ax.legend(handles, labels, fontsize=7, loc="lower left", ncol=3, frameon=False)
    if timeline["metric"] == "accuracy":
        ax.set_ylim(0, 1.02)
    ax.set_ylabel(metric, fontsize=9)
    ax.set_title(f"{metric.capitalize()} over the last {timeline['window']} labels", fontsize=10, loc="left")
    _date_axis(ax, lo, hi)
    style_axes(ax)
    return png(fig)


def volume_png(timeline: dict[str, Any]) -> bytes:
    volume = timeline["volume"]
    if not volume:
        return empty_plot("No predictions in this period.")

    fig = new_figure(7.5, 2.4)
    ax = fig.add_subplot()
    width = timeline["bucket_seconds"] / 86400 * 0.9
    ax.bar(
        [_date_num(_when(b["start"])) for b in volume],
        [b["rows"] for b in volume],
        width=width,
        align="edge",
        color=ACCENT,
    )
    ax.xaxis_date()
    minutes = timeline["bucket_seconds"] // 60
    unit = f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"
    ax.set_title(f"Predicted rows per {unit}", fontsize=10, loc="left")
    ends = [_when(b["start"]) for b in volume]
    _date_axis(ax, ends[0], ends[-1] + _bucket(timeline))
    style_axes(ax)
    return png(fig)


def _bucket(timeline: dict[str, Any]) -> Any:
    from datetime import timedelta

    return timedelta(seconds=timeline["bucket_seconds"])


def _main_metric(versions: list[dict[str, Any]]) -> str | None:
    chosen = next((v["promotion_metric"] for v in reversed(versions) if v.get("promotion_metric")), None)
    for name in ([f"holdout_{chosen}"] if chosen else []) + [
        "holdout_accuracy",
        "holdout_f1",
        "holdout_rmse",
    ]:
        if any(name in v["metrics"] for v in versions):
            return name
    names = sorted({k for v in versions for k in v["metrics"]})
    return names[0] if names else None


def versions_png(versions: list[dict[str, Any]]) -> bytes:
    metric = _main_metric(versions)
    if not versions or metric is None:
        return empty_plot("No version metrics recorded (pipelines/promotion.py writes holdout_* tags).")
    fig = new_figure(7.5, 2.6)
    ax = fig.add_subplot()
    xs = [int(v["version"]) for v in versions if metric in v["metrics"]]
    ys = [v["metrics"][metric] for v in versions if metric in v["metrics"]]
    ax.plot(xs, ys, color="#9ca3af", linewidth=1, zorder=1)
    for v in versions:
        if metric not in v["metrics"]:
            continue
        colour = "#15803d" if v["decision"] == "promoted" else "#9ca3af"
        ax.scatter(
            int(v["version"]),
            v["metrics"][metric],
            s=140 if v["champion"] else 40,
            color=colour,
            marker="*" if v["champion"] else "o",
            zorder=2,
        )
    ax.set_xticks(xs, [f"v{x}" for x in xs])
    ax.set_ylabel(metric, fontsize=9)
    ax.set_title(f"{metric} per version (green: promoted, star: champion)", fontsize=10, loc="left")
    style_axes(ax)
    return png(fig)


def drift_png(report: list[FeatureDrift], top: int = 15) -> bytes:
    shown = report[:top][::-1]
    fig = new_figure(7.5, 0.28 * len(shown) + 0.9)
    ax = fig.add_subplot()
    ax.barh(
        [d.feature for d in shown], [d.psi for d in shown], color=[DRIFT_COLOURS[d.status] for d in shown]
    )
    ax.axvline(WATCH, color="#d97706", linestyle="--", linewidth=1)
    ax.axvline(DRIFT, color="#b91c1c", linestyle="--", linewidth=1)
    ax.set_xlabel("PSI (dashed: watch 0.1, drift 0.25)", fontsize=9)
    ax.set_title(f"Most drifted features (top {len(shown)} of {len(report)})", fontsize=10, loc="left")
    style_axes(ax)
    ax.grid(axis="y", visible=False)
    return png(fig)


def distribution_png(feature: str, kind: str, reference: Any, current: list[Any]) -> bytes:
    fig = new_figure(7.5, 2.6)
    ax = fig.add_subplot()
    if kind in (CATEGORICAL, BOOLEAN):
        names, p_ref, p_cur = category_shares(list(reference), current)
        keep = [i for i in range(len(names)) if p_ref[i] > 0 or p_cur[i] > 0][:30]
        x = np.arange(len(keep))
        ax.bar(x - 0.2, p_ref[keep], width=0.4, color="#9ca3af", label="training")
        ax.bar(x + 0.2, p_cur[keep], width=0.4, color=ACCENT, label="recent")
        ax.set_xticks(x, [names[i] for i in keep], rotation=30 if len(keep) > 6 else 0, ha="right")
        ax.set_ylabel("share", fontsize=9)
    else:
        ref, cur = as_numbers(reference, kind), as_numbers(current, kind)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        both = np.concatenate([ref, cur]) if cur.size else ref
        edges = np.histogram_bin_edges(both, bins=30)
        ax.hist(ref, bins=edges, density=True, alpha=0.55, color="#9ca3af", label="training")
        ax.hist(cur, bins=edges, density=True, alpha=0.55, color=ACCENT, label="recent")
        ax.set_ylabel("density", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"{feature}: training vs recent", fontsize=10, loc="left")
    style_axes(ax)
    return png(fig)


def monitoring(
    api: PlatformClient | None = None, reference: Any = None, window: int = 1000, hours: float = 24 * 7
) -> w.VBox:
    """The monitoring page: Refresh re-reads everything from the API."""
    api = connect(api)
    if isinstance(api, w.VBox):
        return api
    banner, summary, versions_table, drift_summary, body = w.HTML(), w.HTML(), w.HTML(), w.HTML(), w.HTML()
    plots = {
        name: plot_widget(f"dash-plot-{name}")
        for name in ("accuracy", "volume", "versions", "drift", "distribution")
    }
    feature = w.Dropdown(description="Feature", layout=w.Layout(width="360px"))
    button = w.Button(description="Refresh", icon="refresh")
    state: dict[str, Any] = {}

    def show_distribution(*_: Any) -> None:
        data = state.get("drift")
        if not data or feature.value is None:
            return
        ref, cur, kinds = data
        plots["distribution"].value = distribution_png(
            feature.value, kinds[feature.value], ref[feature.value], cur[feature.value]
        )

    def render() -> None:
        banner.value = ""
        try:
            info = api.model()
            acc = api.accuracy()
            tl = api.timeline(hours)
            vs = api.versions()["versions"]
            recent = api.recent_predictions(limit=window)
        except ApiError as exc:
            banner.value = api_banner(exc)
            return
        from dashboards.forms import accuracy_text

        model = info["model"]
        task = info.get("task") or tl.get("task", "classification")
        summary.value = (
            f"<div class='dash-card'><b>{e(model['name'])}</b> version <b>{e(model['version'])}</b> "
            f"(alias {e(model['alias'])}, {e(task)})<br>"
            f"<span class='dash-accuracy'>{accuracy_text(acc)}</span>"
            f"</div>"
        )
        plots["accuracy"].value = accuracy_png(tl, vs)
        plots["volume"].value = volume_png(tl)
        plots["versions"].value = versions_png(vs)
        metric = _main_metric(vs)
        versions_table.value = table(
            ["version", "registered (UTC)", "decision", metric or "metric", "champion"],
            [
                [
                    f"v{e(v['version'])}",
                    e(short_time(v["registered_at"])) if v["registered_at"] else "?",
                    e(v["decision"] or "-")
                    + (f" <span class='dash-muted'>{e(v['reason'])}</span>" if v.get("reason") else ""),
                    f"{v['metrics'][metric]:.4f}" if metric and metric in v["metrics"] else "-",
                    "&#9733;" if v["champion"] else "",
                ]
                for v in vs[::-1][:10]
            ],
            "dash-versions",
        )
        render_drift(info, recent)

    def render_drift(info: dict[str, Any], recent: dict[str, Any]) -> None:
        count = recent["count"]
        if not count:
            drift_summary.value = (
                "<p class='dash-traffic'>No predictions from this version yet: drift needs traffic.</p>"
            )
            body.value = ""
            plots["drift"].value = plots["distribution"].value = empty_plot("No recent traffic.")
            return
        ref = reference if reference is not None else state.get("reference")
        if ref is None:
            try:
                ref = state["reference"] = load_reference()
            except ValueError as exc:
                drift_summary.value = error_html(str(exc))
                return
        columns = recent["columns"]
        missing = [c for c in columns if c not in ref.columns]
        if missing:
            drift_summary.value = error_html(f"the reference data has no column(s) {', '.join(missing)}")
            return
        current = {c: [row[i] for row in recent["rows"]] for i, c in enumerate(columns)}
        specs = {s.name: s for s in feature_specs(info, ref)}
        kinds = {c: specs[c].kind if c in specs else None for c in columns}
        cats = {c: specs[c].categories if c in specs else None for c in columns}
        report = _drift_report({c: ref[c] for c in columns}, current, columns, kinds, cats)
        kinds = {d.feature: d.kind for d in report}
        drifted = sum(d.status == "drift" for d in report)
        watch = sum(d.status == "watch" for d in report)
        classes: dict[str, int] = {}
        for label in recent["labels"]:
            classes[str(label)] = classes.get(str(label), 0) + 1
        mix = ", ".join(f"{e(c)}: {n} ({n / count:.0%})" for c, n in sorted(classes.items())[:12])
        drift_summary.value = (
            f"<p class='dash-traffic'>Last {count} predicted rows ({e(short_time(recent['oldest']))} to "
            f"{e(short_time(recent['newest']))}); predicted {mix}</p>"
            f"<p class='dash-drift-summary'>{drifted} of {len(report)} features drifted (PSI &gt; 0.25), "
            f"{watch} to watch (0.1-0.25).</p>"
        )
        plots["drift"].value = drift_png(report)
        body.value = table(
            ["feature", "kind", "PSI", "status", "training", "recent"],
            [
                [
                    e(d.feature),
                    e(d.kind),
                    f"{d.psi:.3f}",
                    f"<b style='color:{DRIFT_COLOURS[d.status]}'>{d.status}</b>",
                    f"mean {d.reference_mean:.4g}"
                    if d.reference_mean is not None
                    else f"most moved: {e(d.top_shift)}",
                    f"mean {d.current_mean:.4g}" if d.current_mean is not None else f"{d.unseen} unseen",
                ]
                for d in report
            ],
            "dash-drift",
        )
        state["drift"] = (ref, current, kinds)
        previous = feature.value
        feature.options = [d.feature for d in report]
        feature.value = previous if previous in feature.options else report[0].feature
        show_distribution()

    feature.observe(show_distribution, names="value")
    button.on_click(lambda _: render())
    render()

    def section(title: str, *children: w.Widget) -> w.VBox:
        return w.VBox([w.HTML(f"<h3 style='margin:14px 0 4px'>{e(title)}</h3>"), *children])

    board = w.VBox(
        [
            w.HTML(CSS),
            banner,
            w.HBox([summary, button], layout=w.Layout(align_items="center", gap="12px")),
            section("Live accuracy", plots["accuracy"]),
            section("Prediction volume", plots["volume"]),
            section("Champion history", plots["versions"], versions_table),
            section(
                "Feature drift (PSI against the training data)",
                drift_summary,
                plots["drift"],
                feature,
                plots["distribution"],
                body,
            ),
        ]
    )
    board.banner, board.summary, board.body, board.button = banner, summary, body, button
    board.plots, board.feature, board.versions_table, board.drift_summary = (
        plots,
        feature,
        versions_table,
        drift_summary,
    )
    return board
