"""`python -m pipelines.summary`: what the last pipeline run produced (printed at the end of `make demo`).

Shows the model version the `champion` alias points to, its holdout metrics and promotion decision,
where the executed notebooks are, and how to open the MLflow UI.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from jobrunner.config import get_settings
from pipelines.cli import run_command
from pipelines.stage import load_params


def champion_summary(model_name: str, alias: str) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise LookupError(
            f"no model is @{alias} for '{model_name}' in {settings.mlflow_tracking_uri}; "
            "run `dvc repro` first"
        ) from exc
    metrics = {k[len("holdout_") :]: float(v) for k, v in version.tags.items() if k.startswith("holdout_")}
    # The newest version's decision: the last evaluation (the DVC metrics hold scores only, because a
    # decision depends on what the registry held before).
    versions = client.search_model_versions(
        f"name = '{model_name}'", order_by=["version_number DESC"], max_results=1
    )
    latest = versions[0] if versions else version
    return {
        "model": model_name,
        "alias": alias,
        "version": int(version.version),
        "run_id": version.run_id,
        "task": version.tags.get("promotion.task", "classification"),
        "metrics": metrics,
        "decision": version.tags.get("promotion.decision"),
        "reason": version.tags.get("promotion.reason"),
        "latest_version": int(latest.version),
        "latest_decision": latest.tags.get("promotion.decision"),
        "latest_reason": latest.tags.get("promotion.reason"),
        "tracking_uri": settings.mlflow_tracking_uri,
    }


@click.command(name="summary")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def summary_command(as_json: bool) -> int:
    """What the last pipeline run produced: the champion model, its metrics and decision, the notebooks."""
    settings = get_settings()
    params = load_params(settings.project_dir)
    name, alias = params["evaluate"]["model_name"], params["evaluate"].get("alias", "champion")
    try:
        info = champion_summary(name, alias)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    reports = sorted((settings.project_dir / "reports" / "notebooks").glob("*.html"))
    info["executed_notebooks"] = [str(p.relative_to(settings.project_dir)) for p in reports]
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in sorted(info["metrics"].items()))
    uri = str(info["tracking_uri"])
    print()
    print(f"Champion model: {name} version {info['version']} (models:/{name}@{alias})")
    print(f"  holdout metrics: {metrics}")
    print(f"  {info['task']}; promotion: {info['decision']} - {info['reason']}")
    if info["latest_version"] != info["version"]:
        print(
            f"  latest candidate: version {info['latest_version']} {info['latest_decision']} - "
            f"{info['latest_reason']}"
        )
    print(f"  trained in MLflow run {info['run_id']}")
    print("Executed notebooks (HTML, open in a browser; .ipynb beside them):")
    for path in info["executed_notebooks"]:
        print(f"  {path}")
    print("MLflow UI:")
    if uri.startswith("sqlite:"):
        print(
            f"  make mlflow-ui   (or: .venv/bin/mlflow ui --backend-store-uri {uri}) -> http://127.0.0.1:5000"
        )
    else:
        print(f"  {uri}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.summary [--json]`; returns the exit code (1: no champion yet)."""
    return run_command(summary_command, argv, "python -m pipelines.summary")


if __name__ == "__main__":
    sys.exit(main())
