"""The verification report: JSON and HTML artifacts of the new MLflow run, and tags on the model versions.

The new run (tagged `jobrunner.verifies=<run>`) gets `verification/verification.json` (Verification.as_dict)
and `verification/verification.html` (the same, readable) and the tag `jobrunner.verification`. Every
registered model version whose source run is the verified run gets `reproduced` = `true` | `false`,
`reproduced.differences` (one line per difference, "none" when there is none), `reproduced.run` (the
verification's MLflow run) and `reproduced.rtol`.
"""

from __future__ import annotations

import html
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner.tags import VERIFICATION_TAG

log = logging.getLogger(__name__)
REPRODUCED_TAG = "reproduced"
MAX_TAG = 5000  # MLflow keeps 5000 characters of a model version tag

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from jobrunner.provenance.verify import Verification


def publish(verification: Verification, client: MlflowClient) -> None:
    """Log the report to the new run and tag the model versions of the verified run (listed in the
    verification's `model_versions`). A registry that cannot be searched leaves the versions untagged."""
    run_id = verification.new_run_id
    if run_id is None:  # verify.verify_run publishes only re-executions that recorded a run
        raise ValueError(f"verification of run {verification.run_id} has no new run to publish to")
    verdict = "true" if verification.reproduced else "false"
    versions: list[ModelVersion]
    try:
        versions = list(client.search_model_versions(f"run_id = '{verification.run_id}'"))
    except Exception as exc:  # noqa: BLE001 - no registry (a file store without one): only the report
        log.warning("model versions of run %s not tagged: %s", verification.run_id, exc)
        versions = []
    differences = "\n".join(verification.differences) or "none"
    for v in versions:
        for key, value in (
            (REPRODUCED_TAG, verdict),
            (f"{REPRODUCED_TAG}.differences", differences),
            (f"{REPRODUCED_TAG}.run", verification.new_run_id or ""),
            (f"{REPRODUCED_TAG}.rtol", f"{verification.rtol:g}"),
        ):
            client.set_model_version_tag(v.name, v.version, key, _clip(value))
        verification.model_versions.append(f"{v.name}/{v.version}")
    client.set_tag(run_id, VERIFICATION_TAG, "reproduced" if verification.reproduced else "not_reproduced")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "verification.json").write_text(
            json.dumps(verification.as_dict(), indent=2, default=str)
        )
        (Path(tmp) / "verification.html").write_text(render_html(verification))
        for name in ("verification.json", "verification.html"):
            client.log_artifact(run_id, str(Path(tmp) / name), artifact_path="verification")


def _clip(value: str) -> str:
    return value if len(value) <= MAX_TAG else value[: MAX_TAG - 20] + "\n... (more in the report)"


def render_html(verification: Verification) -> str:
    d = verification.as_dict()
    e = html.escape
    verdict = "Reproduced" if d["reproduced"] else "Not reproduced"
    colour = "#15803d" if d["reproduced"] else "#b91c1c"

    def table(title: str, rows: list[tuple[str, Any, Any, bool]]) -> str:
        if not rows:
            return ""
        body = "".join(
            f"<tr{' class=differs' if bad else ''}><td>{e(str(k))}</td>"
            f"<td>{e(str(a))}</td><td>{e(str(b))}</td>"
            f"<td>{'differs' if bad else 'same'}</td></tr>"
            for k, a, b, bad in rows
        )
        return (
            f"<h2>{e(title)}</h2><table><tr><th></th><th>recorded</th><th>now</th><th></th></tr>"
            f"{body}</table>"
        )

    metrics = [(k, v["recorded"], v["now"], k in d["mismatched"]) for k, v in d["metrics"].items()]
    outputs = [(k, v["recorded"], v["now"], k in d["mismatched_outputs"]) for k, v in d["outputs"].items()]
    cells = [(c["cell"], c["a"], c["b"], True) for c in d["cells"]]
    differences = "".join(f"<li>{e(x)}</li>" for x in d["differences"]) or "<li>none</li>"
    title = f"Verification of run {e(d['run_id'])}"
    rerun = f"<code>{e(str(d['verification_run_id']))}</code>"
    outcome = f"{e(str(d['outcome']['recorded']))} &rarr; {e(str(d['outcome']['now']))}"
    tables = (
        table("Metrics", metrics)
        + table("Output artifacts (DVC md5)", outputs)
        + table("Cells whose text outputs differ", cells)
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px}} table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}}
tr.differs td{{background:#fef2f2}}</style></head><body>
<h1 style="color:{colour}">{verdict}</h1>
<p>Run <code>{e(d["run_id"])}</code> ({e(d["notebook"])}) re-executed as run {rerun};
outcome {outcome}; relative tolerance {d["rtol"]:g};
text outputs of {d["cells_compared"]} code cell(s) compared.</p>
<h2>Differences</h2><ul>{differences}</ul>
{tables}
</body></html>
"""
