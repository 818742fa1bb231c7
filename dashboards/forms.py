"""The prediction form: typed inputs per feature, example rows, the answer as bars, and feedback.

Inputs follow each feature's kind (dashboards.reference.feature_specs): a number field (integer where the
signature says long), a dropdown of the training categories, a checkbox, a date picker. "Load example"
fills them from a row of the reference data (by index, or random when the index is blank) and says its
true label; thumbs up/down post that prediction's true label (POST /v1/feedback, a write key) and show the
live accuracy the API answers.
"""

from __future__ import annotations

import json
import random
from datetime import date, datetime
from typing import Any

import ipywidgets as w

from dashboards.client import ApiError, PlatformClient
from dashboards.drift import BOOLEAN, CATEGORICAL, DATETIME, NUMERIC
from dashboards.reference import FeatureSpec, feature_specs, load_reference, target_column
from dashboards.widgets import (
    ACCENT,
    CSS,
    api_banner,
    connect,
    e,
    guarded,
    new_figure,
    plot_widget,
    png,
    style_axes,
)

FIELD_LAYOUT = w.Layout(width="310px")
FIELD_STYLE = {"description_width": "150px"}
MISSING_OPTION = "(missing)"


def _plain(value: Any) -> Any:
    """numpy / pandas scalars as plain Python values (JSON-able)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    return value


def _is_missing(value: Any) -> bool:
    try:
        import pandas as pd

        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def make_input(spec: FeatureSpec) -> w.Widget:
    common: dict[str, Any] = {
        "description": spec.name,
        "style": FIELD_STYLE,
        "layout": FIELD_LAYOUT,
        "description_allow_html": False,
    }
    if spec.kind == BOOLEAN:
        return w.Checkbox(
            value=bool(spec.default) if spec.default is not None else False, indent=True, **common
        )
    if spec.kind == CATEGORICAL and spec.categories is not None:
        options: list[tuple[str, Any]] = [(str(c), _plain(c)) for c in spec.categories]
        if spec.optional:
            options.append((MISSING_OPTION, None))
        default = _plain(spec.default) if spec.default in spec.categories else options[0][1]
        return w.Dropdown(options=options, value=default, **common)
    if spec.kind not in (NUMERIC, DATETIME):  # categories unknown, binary, anything else: typed as text
        return w.Text(value="" if spec.default is None else str(spec.default), **common)
    if spec.kind == DATETIME:
        value = spec.default
        day = value.date() if hasattr(value, "date") else value if isinstance(value, date) else None
        return w.DatePicker(value=day, **common)
    if spec.integer:
        return w.IntText(value=int(spec.default or 0), **common)
    return w.FloatText(value=float(spec.default or 0.0), **common)


def read_input(spec: FeatureSpec, field: w.Widget) -> Any:
    """The field's value as the JSON value the API expects for this feature."""
    value = field.value
    if spec.kind == DATETIME:
        return value.isoformat() if isinstance(value, (date, datetime)) else None
    if isinstance(field, w.Text):
        return value if value != "" else None
    return _plain(value)


def set_input(spec: FeatureSpec, field: w.Widget, value: Any) -> None:
    """Put a reference-data value into a field (missing values leave categorical dropdowns on '(missing)')."""
    if _is_missing(value):
        if isinstance(field, w.Dropdown) and spec.optional:
            field.value = None
        return
    value = _plain(value)
    if spec.kind == DATETIME:
        field.value = value.date() if hasattr(value, "date") else date.fromisoformat(str(value)[:10])
    elif isinstance(field, w.Dropdown):
        known = [v for _, v in field.options]
        field.value = (
            value if value in known else next((k for k in known if str(k) == str(value)), field.value)
        )
    elif isinstance(field, w.Checkbox):
        field.value = bool(value)
    elif isinstance(field, w.IntText):
        field.value = int(round(float(value)))
    elif isinstance(field, w.FloatText):
        field.value = round(float(value), 6)
    else:
        field.value = str(value)


def class_name(info: dict[str, Any], label: Any) -> str:
    """'benign (1)' when the model knows class names, else the label itself."""
    names = info.get("class_names") or {}
    name = names.get(str(label)) if isinstance(names, dict) else None
    return f"{name} ({label})" if name and str(name) != str(label) else str(label)


def accuracy_text(acc: dict[str, Any]) -> str:
    if acc.get("mae") is not None:  # a regressor (GET /v1/feedback/accuracy reports errors)
        rmse = f", RMSE <b>{acc['rmse']:.4g}</b>" if acc.get("rmse") is not None else ""
        return f"Live error: MAE <b>{acc['mae']:.4g}</b>{rmse} over {acc.get('labelled', 0)} labels"
    if acc.get("accuracy") is None:
        return f"Live accuracy: no feedback labels yet (window {acc.get('window', '?')})"
    flag = " - <b style='color:#b91c1c'>below the threshold</b>" if acc.get("below_threshold") else ""
    return (
        f"Live accuracy: <b>{acc['accuracy']:.3f}</b> over {acc['labelled']} labelled predictions "
        f"(threshold {acc['threshold']:.2f}){flag}"
    )


def probability_png(info: dict[str, Any], probabilities: dict[str, float], predicted: Any) -> bytes:
    items = sorted(probabilities.items(), key=lambda kv: kv[1])
    fig = new_figure(5.2, 0.45 * len(items) + 0.7)
    ax = fig.add_subplot()
    labels = [class_name(info, k) for k, _ in items]
    colours = [ACCENT if str(k) == str(predicted) else "#cbd5e1" for k, _ in items]
    bars = ax.barh(labels, [v for _, v in items], color=colours)
    for bar, (_, v) in zip(bars, items, strict=True):
        ax.text(min(v + 0.01, 0.9), bar.get_y() + bar.get_height() / 2, f"{v:.1%}", va="center", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability", fontsize=9)
    style_axes(ax)
    ax.grid(axis="x", color="#e5e7eb", linewidth=0.8)
    ax.grid(axis="y", visible=False)
    return png(fig)


def prediction_form(
    api: PlatformClient | None = None, defaults: dict[str, Any] | None = None, reference: Any = None
) -> w.VBox:
    """The form; `defaults` (feature -> value) override the training data's medians and modes."""
    api = connect(api)
    if isinstance(api, w.VBox):
        return api
    result, status = w.HTML(), w.HTML()
    try:
        info = api.model()
    except ApiError as exc:
        status.value = api_banner(exc)
        page = w.VBox([w.HTML(CSS), status, result])
        page.result, page.status = result, status
        return page
    notes = []
    if reference is None:
        try:
            reference = load_reference()
        except ValueError as exc:
            notes.append(f"Example rows unavailable: {e(exc)}")
    specs = feature_specs(info, reference)
    fields = {s.name: make_input(s) for s in specs}
    for s in specs:
        if defaults and s.name in defaults:
            set_input(s, fields[s.name], defaults[s.name])
    target = target_column(info, reference)
    task = info.get("task") or ("regression" if not info.get("classes") else "classification")
    model = info["model"]

    predict_button = w.Button(description="Predict", button_style="primary", icon="play")
    example_index = w.Text(
        placeholder="random",
        description="Row",
        layout=w.Layout(width="170px"),
        style={"description_width": "40px"},
    )
    example_button = w.Button(description="Load example row", icon="table")
    example_note = w.HTML()
    bars = plot_widget("dash-probabilities")
    bars.layout.display = "none"
    accuracy = w.HTML()
    up = w.Button(description="Correct", icon="thumbs-up", button_style="success", disabled=True)
    down = w.Button(description="Wrong", icon="thumbs-down", button_style="danger", disabled=True)
    truth: w.Widget
    if task == "regression":
        truth = w.FloatText(description="True value", layout=w.Layout(width="240px"))
    else:
        truth = w.Dropdown(
            options=[(class_name(info, c), c) for c in info.get("classes") or []],
            description="True label",
            layout=w.Layout(width="260px"),
        )
    send = w.Button(description="Send true label", icon="check", disabled=True)
    feedback_msg = w.HTML()
    state: dict[str, Any] = {"prediction": None, "example_truth": None}

    def show_accuracy(acc: dict[str, Any]) -> None:
        accuracy.value = f"<p class='dash-live-accuracy'>{accuracy_text(acc)}</p>"

    try:
        show_accuracy(api.accuracy())
    except ApiError as exc:
        accuracy.value = f"<p class='dash-muted'>Live accuracy unavailable: {e(exc)}</p>"

    def load_example() -> str:
        if reference is None or len(reference) == 0:
            raise ValueError("no reference data: set DASHBOARD_REFERENCE_DATA to the training data")
        text = example_index.value.strip()
        if text:
            if not text.isdigit() or int(text) >= len(reference):
                raise ValueError(f"row must be a number from 0 to {len(reference) - 1}, got {text!r}")
            index = int(text)
        else:
            index = random.randrange(len(reference))  # noqa: S311 - which example row to show, not a secret
        row = reference.iloc[index]
        for s in specs:
            if s.name in reference.columns:
                set_input(s, fields[s.name], row[s.name])
        state["example_truth"] = _plain(reference[target].iloc[index]) if target else None
        known = (
            f"; its true {e(target)}: <b>{e(class_name(info, state['example_truth']))}</b>" if target else ""
        )
        return f"<span class='dash-example'>Row {index} of the training data{known}</span>"

    def predict() -> str:
        answer = api.predict([{s.name: read_input(s, fields[s.name]) for s in specs}])
        p = answer["predictions"][0]
        m = answer["model"]
        state["prediction"] = p
        for b in (up, down, send):
            b.disabled = False
        feedback_msg.value = ""
        footer = (
            f"<p class='dash-muted'>model {e(m['name'])} version {e(m['version'])} (alias {e(m['alias'])}), "
            f"prediction id <code>{e(p['prediction_id'])}</code></p>"
        )
        if p.get("value") is not None and p.get("label") is None:  # a regressor
            bars.layout.display = "none"
            truth.value = float(p["value"])
            big = f"Predicted value: {float(p['value']):.6g}"
            return f'<div class="dash-result"><div class="dash-big">{big}</div>{footer}</div>'
        if p.get("label") is None and p.get("output") is not None:  # neither classifier nor regressor
            bars.layout.display = "none"
            for b in (up, down, send):
                b.disabled = True
            shown = e(json.dumps(p["output"])[:2000])
            big = "Model output"
            return (
                f'<div class="dash-result"><div class="dash-big">{big}</div><pre>{shown}</pre>{footer}</div>'
            )
        probs = p.get("probabilities") or {}
        if probs:
            bars.value = probability_png(info, probs, p["label"])
            bars.layout.display = ""
        if isinstance(truth, w.Dropdown):
            wanted = state["example_truth"] if state["example_truth"] is not None else p["label"]
            truth.value = next((v for _, v in truth.options if str(v) == str(wanted)), truth.value)
        return (
            '<div class="dash-result"><div class="dash-big">'
            f"Predicted class: {e(class_name(info, p['label']))}"
            f"</div>{footer}</div>"
        )

    def post(label: Any) -> str:
        p = state["prediction"]
        if p is None:
            raise ValueError("predict first: feedback is about one prediction")
        out = api.feedback(p["prediction_id"], label)
        for b in (up, down, send):
            b.disabled = True
        show_accuracy(out["accuracy"])
        verdict = "correct" if out.get("correct") else "wrong"
        return f"<p class='dash-ok'>Recorded: true label {e(label)} ({verdict}).</p>"

    def wrong() -> str:
        if isinstance(truth, w.Dropdown):
            p = state["prediction"] or {}
            others = [v for _, v in truth.options if str(v) != str(p.get("label"))]
            if len(others) == 1:  # binary: the other class is the truth
                return post(others[0])
        return "<p>Pick the true label and press <b>Send true label</b>.</p>"

    example_button.on_click(lambda _: guarded(example_note, load_example))
    predict_button.on_click(lambda _: guarded(result, predict))
    up.on_click(lambda _: guarded(feedback_msg, lambda: post((state["prediction"] or {}).get("label"))))
    down.on_click(lambda _: guarded(feedback_msg, wrong))
    send.on_click(lambda _: guarded(feedback_msg, lambda: post(_plain(truth.value))))
    if task == "regression":
        up.layout.display = down.layout.display = "none"

    header = w.HTML(
        f"<p>Model <b>{e(model['name'])}</b> version <b>{e(model['version'])}</b> "
        f"(alias {e(model['alias'])}), "
        f"{e(task)}{', predicting ' + e(target) if target else ''}"
        f"{', served by the ' + e(info['path']) + ' path' if info.get('path') else ''}. "
        "Values start at the training data's "
        "medians (numbers) and most frequent values (categories).</p>"
        + "".join(f"<p class='dash-muted'>{n}</p>" for n in notes)
    )
    grid = w.GridBox(list(fields.values()), layout=w.Layout(grid_template_columns="repeat(3, 320px)"))
    feedback_box = w.VBox(
        [w.HTML("<b>Was it right?</b>"), w.HBox([up, down]), w.HBox([truth, send]), feedback_msg, accuracy]
    )
    page = w.VBox(
        [
            w.HTML(CSS),
            status,
            header,
            w.HBox([example_index, example_button, example_note]),
            grid,
            predict_button,
            w.HBox([w.VBox([result, bars]), feedback_box]),
        ]
    )
    page.fields, page.specs, page.button, page.result = fields, specs, predict_button, result
    page.example_index, page.example_button, page.example_note = example_index, example_button, example_note
    page.bars, page.accuracy, page.feedback_message = bars, accuracy, feedback_msg
    page.thumbs_up, page.thumbs_down, page.truth, page.send = up, down, truth, send
    page.status = status
    return page
