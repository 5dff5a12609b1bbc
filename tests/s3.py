"""A real S3 API for the tests: moto's server on a loopback port, once per test session.

`moto_endpoint` starts it (a thread in this process, ``http://127.0.0.1:PORT``); `s3_bucket`
points the standard AWS environment at it for one test and creates a fresh bucket there.
The code under test reaches it over HTTP like any bucket; the tests read it back through
boto3 (which moto brings), a client independent of ours.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from attrs import define

#: The secret key every test's environment holds: it must never show in a message.
SECRET_KEY = "s3cr3t-moto-key-never-shown"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server, started once for the whole test session; its endpoint URL."""
    from moto.server import ThreadedMotoServer  # heavy (flask): only S3 tests pay for it

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@define
class Bucket:
    """A fresh bucket on the moto server, read and changed through boto3."""

    name: str
    endpoint: str
    client: Any  # a boto3 S3 client (boto3 ships no type hints)

    def url(self, prefix: str) -> str:
        """``s3://BUCKET/PREFIX``."""
        return f"s3://{self.name}/{prefix}"

    def get(self, key: str) -> bytes | None:
        """The bytes of object `key`, or None when there is none."""
        try:
            found = self.client.get_object(Bucket=self.name, Key=key)
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(found["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix`, sorted."""
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(entry["Key"] for entry in listed.get("Contents", []))


def point_aws_env_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """The standard AWS environment, aimed at `endpoint`, for this test only."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket, with the AWS environment pointed at moto for this test."""
    import boto3  # moto's dependency; only S3 tests need it

    point_aws_env_at(monkeypatch, moto_endpoint)
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-access-key",
        aws_secret_access_key=SECRET_KEY,
    )
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(name, moto_endpoint, client)
