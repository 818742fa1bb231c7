"""Where executed notebooks of jobs are stored, picked by JOBRUNNER_ARTIFACT_URI's scheme.

`s3://bucket/prefix` goes through boto3 (endpoint from AWS_ENDPOINT_URL, so MinIO and the moto test
server work like AWS); anything else is a local folder. Calls retry briefly through botocore's own
"standard" retry mode (connection errors, throttling, 5xx; exponential backoff with jitter): an S3 blip
should not cost a re-run of the notebook. What still fails is one ArtifactStoreError naming the call.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, Protocol, TypedDict, TypeVar
from urllib.parse import urlparse

from jobrunner.errors import ArtifactStoreError

log = logging.getLogger(__name__)
T = TypeVar("T")
UPLOAD_TRIES = 4  # botocore's max_attempts: the first call and three retries


class ArtifactStore(Protocol):
    def put(self, local: Path, key: str) -> str: ...
    def get(self, uri: str) -> bytes: ...


class S3Body(Protocol):
    def read(self) -> bytes: ...


class S3Object(TypedDict):
    """The part of boto3's get_object response we read."""

    Body: S3Body


class S3Head(TypedDict):
    """The part of boto3's head_object response we read."""

    ETag: str


class S3Listed(TypedDict):
    Key: str
    ETag: str


class S3ListPage(TypedDict, total=False):
    """One page of list_objects_v2 (no "Contents" when nothing matched; a token when truncated)."""

    Contents: list[S3Listed]
    IsTruncated: bool
    NextContinuationToken: str


class S3Paginator(Protocol):
    def paginate(self, *, Bucket: str, Prefix: str) -> Iterable[S3ListPage]: ...


class S3Client(Protocol):
    """The calls of boto3's S3 client we make (boto3 ships no types)."""

    def upload_file(self, Filename: str, Bucket: str, Key: str) -> None: ...
    def download_file(self, Bucket: str, Key: str, Filename: str) -> None: ...
    def get_object(self, *, Bucket: str, Key: str) -> S3Object: ...
    def head_object(self, *, Bucket: str, Key: str) -> S3Head: ...
    def list_objects_v2(self, *, Bucket: str, Prefix: str, ContinuationToken: str = ...) -> S3ListPage: ...
    def get_paginator(self, operation_name: Literal["list_objects_v2"]) -> S3Paginator: ...


class LocalStore:
    def __init__(self, root: str):
        self.root = Path(root[len("file://") :] if root.startswith("file://") else root).expanduser()

    def put(self, local: Path, key: str) -> str:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)  # readers never see half a file
        return str(target.resolve())

    def get(self, uri: str) -> bytes:
        return Path(uri[len("file://") :] if uri.startswith("file://") else uri).read_bytes()


class S3Store:
    def __init__(self, uri: str):
        parsed = urlparse(uri)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": UPLOAD_TRIES, "mode": "standard"}, connect_timeout=5, read_timeout=60
            )
            self._client = boto3.client(
                "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config
            )
        return self._client

    def put(self, local: Path, key: str) -> str:
        full = f"{self.prefix}/{key}" if self.prefix else key
        _retry(
            lambda: self.client.upload_file(str(local), self.bucket, full), f"upload to s3://{self.bucket}"
        )
        return f"s3://{self.bucket}/{full}"

    def get(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        return _retry(
            lambda: self.client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read(),
            f"download {uri}",
        )


def _retry(func: Callable[[], T], what: str) -> T:
    """Run one boto3 call (botocore retries inside it); its final failure as an ArtifactStoreError."""
    try:
        return func()
    except Exception as exc:
        raise ArtifactStoreError(f"{what} failed after {UPLOAD_TRIES} tries: {exc}") from exc


STORES: dict[str, Callable[[str], ArtifactStore]] = {"s3": S3Store, "file": LocalStore, "": LocalStore}


def store_for(uri: str) -> ArtifactStore:
    scheme = urlparse(uri).scheme if "://" in uri else ""
    try:
        return STORES[scheme](uri)
    except KeyError:
        raise ArtifactStoreError(
            f"unsupported JOBRUNNER_ARTIFACT_URI scheme {scheme!r}: use s3://bucket/prefix or a local folder"
        ) from None


def read_uri(uri: str) -> bytes:
    """Read an artifact by the URI stored on a job (s3://... or a local path)."""
    return store_for(uri).get(uri) if uri.startswith("s3://") else LocalStore("").get(uri)
