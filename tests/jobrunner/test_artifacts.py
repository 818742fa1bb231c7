"""The S3 artifact store rides out a short outage with botocore's own retries, and names what failed."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.jobrunner.support import TcpProxy

pytestmark = pytest.mark.services


def _store_behind(proxy: TcpProxy, bucket: str, monkeypatch: pytest.MonkeyPatch):
    from jobrunner.execution.artifacts import store_for

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    return store_for(f"s3://{bucket}/jobs")


def test_upload_survives_a_one_second_s3_outage(
    s3_bucket: str, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = urlparse(s3_env)
    proxy = TcpProxy((target.hostname, target.port)).start()
    store = _store_behind(proxy, s3_bucket, monkeypatch)
    local = tmp_path / "out.ipynb"
    local.write_text('{"cells": []}')
    assert store.get(store.put(local, "warm/up.ipynb")) == b'{"cells": []}'  # client made, endpoint works

    proxy.cut()
    threading.Timer(1.0, proxy.restore).start()
    started = time.monotonic()
    uri = store.put(local, "a/out.ipynb")
    assert time.monotonic() - started >= 0.9  # it did wait for the server to come back
    assert uri == f"s3://{s3_bucket}/jobs/a/out.ipynb" and store.get(uri) == b'{"cells": []}'


def test_a_lasting_outage_is_one_clear_error(
    s3_bucket: str, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobrunner.errors import ArtifactStoreError

    target = urlparse(s3_env)
    proxy = TcpProxy((target.hostname, target.port)).start()
    store = _store_behind(proxy, s3_bucket, monkeypatch)
    proxy.cut()
    local = tmp_path / "out.ipynb"
    local.write_text("{}")
    started = time.monotonic()
    with pytest.raises(ArtifactStoreError) as error:
        store.put(local, "b/out.ipynb")
    assert time.monotonic() - started < 60
    assert f"upload to s3://{s3_bucket} failed after 4 tries" in str(error.value)
