"""The HTML page of a run diff (GET /v1/runs/{a}/diff/{b}/html, the job board's "Diff" button).

Most relevant first, as `RunDiff.changes`: a table of every difference, then the code diff and the text
outputs cell by cell. Everything shown comes from the runs and is escaped; the page has no script.
"""

from __future__ import annotations

import html
import json
from typing import Any

from jobrunner.provenance.diff import RunDiff, RunSide

_KINDS = {
    "outcome": "outcome",
    "notebook": "notebook",
    "metric": "metric",
    "parameter": "parameter",
    "data": "data (DVC md5)",
    "code": "code cells",
    "text_output": "text output",
    "image": "images",
    "environment": "environment",
    "git": "git",
}


def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) or "(none)"
    return value if isinstance(value, str) else json.dumps(value)


def _side(tag: str, s: RunSide) -> str:
    e = html.escape
    commit = f"git {s.commit[:10]}{' (dirty)' if s.dirty == 'true' else ''}" if s.commit else "no git commit"
    return (
        f"<li><b>{tag}</b>: run <code>{e(s.run_id)}</code> {e(s.notebook or '?')}, {e(s.outcome or '?')}, "
        f"{e(s.started or '?')}, {e(commit)}</li>"
    )


def render_html(d: RunDiff) -> str:
    e = html.escape
    rows = "".join(
        f"<tr class='change {e(c['kind'])}'><td>{e(_KINDS.get(c['kind'], c['kind']))}</td>"
        f"<td>{e(c['name'])}</td>"
        f"<td>{e(_value(c['a']))}</td><td>{e(_value(c['b']))}</td></tr>"
        for c in d.changes
    )
    summary = (
        "<p class='identical'>No differences: same notebook, code, parameters, data, metrics, outputs "
        "and environment.</p>"
        if d.identical
        else f"<table><tr><th>what</th><th>name</th><th>a</th><th>b</th></tr>{rows}</table>"
    )
    code = (
        "<p>Code cells not compared: an executed notebook is missing from a run's artifacts.</p>"
        if not d.code_compared
        else f"<pre class='code-diff'>{e(chr(10).join(d.code))}</pre>"
        if d.code
        else "<p>Code cells identical.</p>"
    )
    timing = "".join(
        f"<li>{e(k)}: {_value(a)} &rarr; {_value(b)} (timing, not compared)</li>"
        for k, (a, b) in d.timing.items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Diff of runs {e(d.a.run_id[:8])} and {e(d.b.run_id[:8])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px}} table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}}
pre{{background:#f8fafc;padding:8px;overflow:auto}}</style></head><body>
<h1>Diff of two runs</h1><ul>{_side("a", d.a)}{_side("b", d.b)}{timing}</ul>
<h2>Differences, most relevant first</h2>{summary}
<h2>Code</h2>{code}
</body></html>
"""
