"""Output artifacts that differ by md5 only in what changes on every save: MLflow's model metadata.

An MLflow model folder's `MLmodel` records when and as which id it was saved (`utc_time_created`,
`model_uuid`, the run and MLflow version), and zip archives in it (the `skops` format) carry each entry's
time of writing: a re-execution that computes the very same model still writes
another md5. When a declared output's md5 differs, verification looks for the recorded bytes - the
workspace file if it still has the recorded md5, the copy stored with the job (`jobrunner.outputs.stored.*`:
S3 or a local folder), the DVC cache or remote - and compares both with those `MLmodel` lines left out and zip
archives compared by their entries' contents. Equal then, the output counts as reproduced and the report lists
it under `volatile_outputs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from jobrunner.execution.hashing import file_md5, hash_path

log = logging.getLogger(__name__)
MLMODEL = "MLmodel"
_VOLATILE = re.compile(
    r"^(utc_time_created|model_uuid|model_id|run_id|mlflow_version|artifact_path"
    r"|databricks_runtime|model_size_bytes)\s*:.*\n?",
    re.MULTILINE,
)


def stable_digest(path: Path) -> str:
    """md5 (a content hash, as DVC's; not for security) of (relative path, md5) of every file under
    `path`, an MLmodel's volatile lines left out."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    entries = []
    for f in files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        if f.name == MLMODEL:
            digest = hashlib.md5(
                _VOLATILE.sub("", f.read_text(errors="replace")).encode(), usedforsecurity=False
            ).hexdigest()
        elif zipfile.is_zipfile(f):  # e.g. MLflow's skops format: the entries, not their timestamps
            digest = _zip_digest(f)
        else:
            digest = file_md5(f)
        entries.append((rel, digest))
    return hashlib.md5(json.dumps(entries).encode(), usedforsecurity=False).hexdigest()


def _zip_digest(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        entries = sorted(
            (i.filename, hashlib.md5(z.read(i), usedforsecurity=False).hexdigest())
            for i in z.infolist()
            if not i.is_dir()
        )
    return hashlib.md5(json.dumps(entries).encode(), usedforsecurity=False).hexdigest()


def recorded_copy(path: str, md5: str, project: Path, stored_uri: str | None, tmp: Path) -> Path | None:
    """A local copy of the output `path` as the recorded run wrote it (md5 `md5`); None if none is found."""
    from jobrunner.provenance.verify_data import fetch_by_md5

    here = project / path
    if not Path(path).is_absolute() and hash_path(here, project).md5 == md5:
        return here
    dest = tmp / "recorded-output"
    if stored_uri and _download(stored_uri, dest) and hash_path(dest, project).md5 == md5:
        return dest
    dest = tmp / "recorded-output-dvc"
    if fetch_by_md5(project, md5, dest):
        return dest
    return None


def _download(uri: str, dest: Path) -> bool:
    """Copy a stored output (a file, or a folder stored file by file under a prefix) to `dest`."""
    import shutil

    try:
        if not uri.startswith("s3://"):
            source = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
            if source.is_dir():
                shutil.copytree(source, dest)
            elif source.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            return dest.exists()
        from jobrunner.execution.artifacts import S3Store

        parsed = urlparse(uri)
        client = S3Store(uri).client
        prefix = parsed.path.lstrip("/")
        listed = [
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=prefix)
            for o in page.get("Contents", [])
        ]
        # a file is its own key; a folder's files are under "<prefix>/" (not "<prefix>_info.json")
        keys = [prefix] if prefix in listed else [k for k in listed if k.startswith(prefix + "/")]
        for key in keys:
            rel = key[len(prefix) + 1 :]
            target = dest / rel if rel else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(parsed.netloc, key, str(target))
        return bool(keys)
    except Exception as exc:  # noqa: BLE001 - an unreadable copy: the md5s are compared as they are
        log.warning("cannot read the stored output %s: %s", uri, exc)
        return False
