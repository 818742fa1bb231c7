"""The run cache of queued jobs: an identical submission reuses an earlier execution instead of a kernel.

The key (docs/jobs.md, "Run cache") is the SHA-256 of the canonical JSON of

- `code`: the SHA-256 of the notebook's code - the source of every code cell, in order, and the
  kernelspec name; outputs, execution counts, cell and notebook metadata and markdown cells are ignored,
  so opening and re-saving a notebook in JupyterLab does not change it;
- `parameters`: the validated parameters with the defaults resolved, output parameters left out (where
  a run writes is not what it computes);
- `inputs`: the DVC md5 of each input file (string parameters naming existing files, outputs excepted);
- `environment`: the md5 of the project's `requirements.lock`, the jobrunner version and the md5 of the
  project's own Python packages (every `*.py` of its top-level packages but `tests`: code the notebook
  imports, such as `pipelines/features.py`).

A submission is a hit when a job with the same key SUCCEEDED (an execution, not itself a hit) and every
output it stored still exists with its recorded hash; the new job is then recorded SUCCEEDED at once with
`cached_from` naming that job, its executed notebook, MLflow run and outputs. Otherwise it is queued as
usual, with its key, for later submissions to reuse.

Never cached: `--no-cache` / `cache=False` / `"cache": false`, jobs that write the workspace
(`write_workspace`), and notebooks that opt out with a `no-cache` cell tag or a `# jobrunner: no-cache`
line in their parameters cell (notebooks that read clocks, networks or unseeded random state).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from jobrunner import __version__
from jobrunner.execution.hashing import file_md5, hash_path
from jobrunner.execution.outputs import input_paths
from jobrunner.execution.params import PARAMETERS_TAG, ParameterSchema
from jobrunner.tags import CACHE_KEY_TAG, CACHE_OUTPUT_PREFIX, CACHE_OUTPUTS_TAG, OUTCOME_TAG

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from jobrunner.execution.artifacts import S3Client

log = logging.getLogger(__name__)

NO_CACHE_TAG = "no-cache"
_NO_CACHE_LINE = re.compile(r"^\s*#\s*jobrunner\s*:\s*no-cache\s*$", re.MULTILINE | re.IGNORECASE)
LOCK_FILE = "requirements.lock"


def code_digest(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of the code cells' sources in order and the kernel name; nothing else of the file."""
    kernel = (nb.metadata.get("kernelspec") or {}).get("name") or ""
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    return hashlib.sha256(json.dumps({"kernel": kernel, "cells": cells}).encode()).hexdigest()


def opted_out(nb: nbformat.NotebookNode) -> bool:
    """A `no-cache` cell tag anywhere, or `# jobrunner: no-cache` in the parameters cell."""
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if NO_CACHE_TAG in tags:
            return True
        if PARAMETERS_TAG in tags and _NO_CACHE_LINE.search(cell.source or ""):
            return True
    return False


def environment_digest(project: Path) -> dict[str, str | None]:
    lock = project / LOCK_FILE
    return {
        "lock_md5": file_md5(lock) if lock.is_file() else None,
        "jobrunner": __version__,
        "packages_md5": packages_digest(project),
    }


def packages_digest(project: Path) -> str:
    """md5 of (path, md5) of every .py file in the project's top-level packages (folders with an
    __init__.py), tests excepted."""
    entries = []
    for package in sorted(
        p for p in project.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests"
    ):
        for f in sorted(package.rglob("*.py")):
            if "__pycache__" not in f.parts:
                entries.append([f.relative_to(project).as_posix(), file_md5(f)])
    return hashlib.md5(json.dumps(entries).encode()).hexdigest()  # noqa: S324


@dataclass(frozen=True)
class CacheKey:
    key: str
    parts: dict[str, Any]


def cache_key(
    nb: nbformat.NotebookNode,
    schema: ParameterSchema,
    values: Mapping[str, Any],
    project: Path,
    inputs_given: list[Path] | None = None,
) -> CacheKey:
    """The key of running `nb` with `values`; `inputs_given` (a DVC stage's deps) replaces the inputs
    found from the parameters."""
    outputs = set(schema.outputs)
    params = {k: v for k, v in {**schema.defaults, **values}.items() if k not in outputs}
    inputs = {}
    for path in inputs_given if inputs_given is not None else input_paths(schema, values, project):
        h = hash_path(path, project)
        inputs[h.path] = h.md5
    parts = {
        "code": code_digest(nb),
        "parameters": params,
        "inputs": inputs,
        "environment": environment_digest(project),
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return CacheKey(hashlib.sha256(text.encode()).hexdigest(), parts)


# -- are the cached outputs still there? ----------------------------------------------------------------
def output_intact(item: Mapping[str, Any]) -> bool:
    """The stored copy of one recorded output exists and has the recorded md5 (a folder: its `.dir` md5
    rebuilt from its files). An output the run did not write (md5 None) has nothing to check."""
    md5: str | None = item.get("md5")
    uri: str | None = item.get("uri")
    if md5 is None:
        return True
    if not uri:
        return False
    try:
        return (
            _s3_md5(uri, dir_=md5.endswith(".dir"))
            if uri.startswith("s3://")
            else hash_path(Path(uri), Path("/")).md5
        ) == md5
    except Exception:
        log.info("cached output %s not readable; a miss", uri, exc_info=True)
        return False


_s3_clients: dict[str, S3Client] = {}


def _s3_client(uri: str) -> S3Client:
    """One S3 client per bucket per process: building one costs far more than the HEAD requests of a
    lookup (a hit must take milliseconds)."""
    from jobrunner.execution.artifacts import S3Store

    bucket = uri[len("s3://") :].partition("/")[0]
    client = _s3_clients.get(bucket)
    if client is None:
        client = _s3_clients[bucket] = S3Store(uri).client
    return client


def _s3_md5(uri: str, *, dir_: bool) -> str | None:
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = _s3_client(uri)
    if not dir_:
        etag = _etag(client, bucket, key)
        return etag if etag is not None else None
    entries, token = [], None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": key + "/", **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            md5 = obj["ETag"].strip('"')
            if "-" in md5:  # a multipart upload's ETag is not the md5: read the object
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()  # S3's ETag digest, not security
            entries.append({"md5": md5, "relpath": obj["Key"][len(key) + 1 :]})
        if not page.get("IsTruncated"):
            break
        token = page["NextContinuationToken"]
    if not entries:
        return None
    entries.sort(key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"  # DVC's .dir digest


def _etag(client: S3Client, bucket: str, key: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return None
    md5 = str(head["ETag"]).strip('"')
    if "-" in md5:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()  # S3's ETag digest, not security
    return md5


def reusable(job: Any) -> bool:
    """A SUCCEEDED execution whose executed notebook and outputs are all still stored as recorded."""
    return bool(job.output_uri) and all(output_intact(o) for o in (job.outputs or []))


# -- `jobrunner run --cache`: the cache of workspace runs, kept in MLflow ----------------------------------


@dataclass(frozen=True)
class RunHit:
    run_id: str
    metrics: dict[str, float]
    notebook: Path | None  # the executed notebook of that run, downloaded


def _output_artifact(target: Any) -> str:
    from jobrunner.execution.outputs import _relative_key

    return f"outputs/{_relative_key(target.parameter, target.path)}"


def restore_run(
    client: Any, experiment_id: str, key: str, targets: list[Any], project: Path, scratch: Path
) -> RunHit | None:
    """A succeeded run with `key` whose logged outputs still have their recorded md5: its outputs are put
    at `targets`' locations (the workspace) and it is returned; None: a miss."""
    import os
    import shutil

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in a stage's output
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{CACHE_KEY_TAG}` = '{key}' and tags.`{CACHE_OUTPUTS_TAG}` = 'stored' "
            f"and tags.`{OUTCOME_TAG}` = 'succeeded'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for run in runs:
        fetched: list[tuple[Any, Path]] = []
        for t in targets:
            # the md5 of what that run stored for this output parameter (not its lineage tags: a DVC stage
            # records its dvc.yaml outs there, e.g. plots/evaluation.png for the output folder plots)
            want = run.data.tags.get(f"{CACHE_OUTPUT_PREFIX}{t.parameter}")
            if want is None:  # stored before the digests were recorded: it cannot vouch for this output
                break
            if want == "missing":  # that run did not write it either
                continue
            try:
                local = Path(client.download_artifacts(run.info.run_id, _output_artifact(t), str(scratch)))
            except Exception:  # noqa: BLE001 - an artifact gone from the store: a miss
                break
            if hash_path(local, project).md5 != want:
                break
            fetched.append((t, local))
        else:
            for t, local in fetched:
                if t.location.is_dir():
                    shutil.rmtree(t.location)
                t.location.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(local), str(t.location))
            notebook = None
            try:
                names = [
                    f.path
                    for f in client.list_artifacts(run.info.run_id, "notebook")
                    if f.path.endswith(".ipynb")
                ]
                notebook = Path(client.download_artifacts(run.info.run_id, names[0], str(scratch)))
            except Exception:
                log.info("run %s: executed notebook not downloadable", run.info.run_id, exc_info=True)
            return RunHit(run.info.run_id, dict(run.data.metrics), notebook)
    return None


def store_run(client: MlflowClient, run_id: str, key: str, targets: list[Any], project: Path) -> None:
    """Log a succeeded workspace run's outputs as artifacts with their md5s and tag its key, for later
    `--cache` runs (and DVC stages)."""
    for t in targets:
        client.set_tag(
            run_id, f"{CACHE_OUTPUT_PREFIX}{t.parameter}", hash_path(t.location, project).md5 or "missing"
        )
        if t.location.is_dir():
            client.log_artifacts(run_id, str(t.location), artifact_path=_output_artifact(t))
        elif t.location.is_file():
            parent = str(Path(_output_artifact(t)).parent)
            client.log_artifact(run_id, str(t.location), artifact_path=parent)
    client.set_tag(run_id, CACHE_KEY_TAG, key)
    client.set_tag(run_id, CACHE_OUTPUTS_TAG, "stored")
