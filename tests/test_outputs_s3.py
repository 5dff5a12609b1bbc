"""A bulk run's images in a bucket: ``out_dir="s3://bucket/prefix"`` against moto's S3 server.

Every test goes over real sockets: the emulator serves the API and the images, moto the S3
API, reached through the AWS environment exactly as a real bucket would be.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web

from worldrouter_async import InvalidRequestError, Session
from worldrouter_async.batch import (
    BatchRunner,
    JournalLostError,
    Outcome,
    OutcomeKind,
    OutputClaimedError,
    read_rows,
)
from worldrouter_async.batch._claim import JournalName, OutputClaim
from worldrouter_async.batch._outputs import open_output
from worldrouter_async.batch._s3 import S3Output
from worldrouter_async.batch.journal import HighWater
from worldrouter_async.testing import Emulator

from .conftest import batch_items
from .s3 import SECRET_KEY, Bucket, point_aws_env_at
from .test_cli import _cli, _cli_against, _write_prompts

pytestmark = pytest.mark.anyio


async def _run(
    session: Session, journal: Path, out: str, count: int, **options: bool
) -> list[Outcome]:
    async with BatchRunner(session, journal, out_dir=out, concurrency=4, **options) as runner:
        return [outcome async for outcome in runner.run(batch_items(count))]


async def test_a_run_puts_every_image_in_the_bucket_with_its_digest_journaled(
    session: Session, emulator: Emulator, s3_bucket: Bucket, tmp_path: Path
) -> None:
    """Each image lands whole under PREFIX/KEY-INDEX.EXT; the journal records its name
    (relative to the prefix) and the SHA-256 of the bytes in the bucket."""
    outcomes = await _run(session, tmp_path / "j.db", s3_bucket.url("job/one"), 3)
    assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    rows = read_rows(tmp_path / "j.db")
    for row in rows:
        assert row.files == (f"{row.key}-0.png",)
        data = s3_bucket.get(f"job/one/{row.files[0]}")
        assert data is not None
        assert data.startswith(b"\x89PNG")
        assert row.digests == (hashlib.sha256(data).hexdigest(),)
    by_key = {o.key: o for o in outcomes}
    assert by_key["r1"].files == (f"s3://{s3_bucket.name}/job/one/r1-0.png",)
    claim = json.loads(s3_bucket.get("job/one/.worldrouter-job") or b"{}")
    assert claim["journal"] == str((tmp_path / "j.db").absolute())
    assert (claim["rows"], claim["sends"]) == (3, 3)
    assert emulator.counters.creates == 3


async def test_a_rerun_downloads_again_only_the_deleted_or_changed_object(
    session: Session, emulator: Emulator, s3_bucket: Bucket, tmp_path: Path
) -> None:
    """A rerun checks every journaled object: a deleted one and one whose bytes changed are
    downloaded and put again, the others are left alone, and nothing is created twice."""
    out = s3_bucket.url("job")
    await _run(session, tmp_path / "j.db", out, 4)
    original = s3_bucket.get("job/r1-0.png")
    s3_bucket.delete("job/r0-0.png")
    s3_bucket.put("job/r1-0.png", b"not the image that was saved")
    assert emulator.counters.storage_requests == 4
    outcomes = await _run(session, tmp_path / "j.db", out, 4)
    assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    assert emulator.counters.storage_requests == 6  # r0 and r1 only
    assert emulator.counters.creates == 4
    assert s3_bucket.get("job/r1-0.png") == original
    rows = {row.key: row for row in read_rows(tmp_path / "j.db")}
    restored = s3_bucket.get("job/r0-0.png")
    assert restored is not None
    assert rows["r0"].digests == (hashlib.sha256(restored).hexdigest(),)


class CuttingProxy:
    """A reverse proxy in front of moto that records each request, and can cut the
    connection of a PUT to an image halfway through its body (nothing reaches moto then)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self.cut_images = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.cut_images and request.method == "PUT" and request.path.endswith(".png"):
            await request.content.readexactly((request.content_length or 2) // 2)
            assert request.transport is not None
            request.transport.abort()  # the upload dies mid-body
            return web.Response(status=500)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as client,
            client.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body
            ) as answer,
        ):
            data = await answer.read()
            kept = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=answer.status, body=data, headers=kept)


@pytest.fixture
async def cutting_proxy(
    s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(s3_bucket.endpoint)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"http://127.0.0.1:{port}"
    point_aws_env_at(monkeypatch, proxy.url)
    try:
        yield proxy
    finally:
        await runner.cleanup()


async def test_an_image_is_one_put_and_an_upload_cut_midway_leaves_no_object(
    session: Session, s3_bucket: Bucket, cutting_proxy: CuttingProxy, tmp_path: Path
) -> None:
    """Images are written with one PutObject on their final key (no multipart upload, no
    temporary key): an upload cut mid-body leaves nothing under that name, the row ends
    download_failed, and a rerun puts the image."""
    cutting_proxy.cut_images = True
    outcomes = await _run(session, tmp_path / "j.db", s3_bucket.url("job"), 2)
    assert {o.kind for o in outcomes} == {OutcomeKind.DOWNLOAD_FAILED}
    assert all("failed" in (o.error or "") and SECRET_KEY not in (o.error or "") for o in outcomes)
    assert s3_bucket.keys("job/") == ["job/.worldrouter-job"]
    cutting_proxy.cut_images = False
    outcomes = await _run(session, tmp_path / "j.db", s3_bucket.url("job"), 2)
    assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    assert s3_bucket.keys("job/") == ["job/.worldrouter-job", "job/r0-0.png", "job/r1-0.png"]
    image_writes = [(m, p) for m, p in cutting_proxy.requests if p.endswith(".png") and m != "GET"]
    assert image_writes
    assert {method for method, _ in image_writes} == {"PUT"}
    assert {path for _, path in image_writes} == {
        f"/{s3_bucket.name}/job/r0-0.png",
        f"/{s3_bucket.name}/job/r1-0.png",
    }


async def test_the_claim_moves_off_the_journal_commits_and_ends_at_the_full_mark(
    session: Session,
    s3_bucket: Bucket,
    cutting_proxy: CuttingProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a bucket the journal's commits only note the new mark: the claim is PUT by a
    task of the run every claim_interval seconds, and once more, complete, when it ends."""
    monkeypatch.setattr(S3Output, "claim_interval", 3600.0)  # no timed move in this run
    await _run(session, tmp_path / "j.db", s3_bucket.url("job"), 6)
    claim_puts = [p for m, p in cutting_proxy.requests if m == "PUT" and "worldrouter-job" in p]
    assert len(claim_puts) == 2  # taken at the start, written in full at the end
    claim = json.loads(s3_bucket.get("job/.worldrouter-job") or b"{}")
    assert (claim["rows"], claim["sends"]) == (6, 6)


@attrs.define
class _Journal:
    """The least a journal store gives the claim (a `ClaimingJournal`)."""

    journal_id: str | None
    high_water: HighWater
    on_advance: Callable[[HighWater], None] | None = None


async def test_a_noted_mark_reaches_the_bucket_while_the_run_goes_on(
    s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keep_up writes the last noted mark after claim_interval, in real time over a real
    socket (the test waits until it shows, bounded)."""
    monkeypatch.setattr(S3Output, "claim_interval", 0.01)
    claim = OutputClaim(S3Output.from_url(s3_bucket.url("job")), JournalName("/j.db", "j.db"))
    claim.take(_Journal("id-1", HighWater(1, 1)), new_journal=False)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(claim.keep_up)
            claim.advance(HighWater(7, 9))
            while b'"rows": 7' not in (s3_bucket.get("job/.worldrouter-job") or b""):
                await anyio.sleep(0.01)
            task_group.cancel_scope.cancel()
    assert json.loads(s3_bucket.get("job/.worldrouter-job") or b"")["sends"] == 9


async def test_a_second_journal_on_a_claimed_prefix_is_refused(
    session: Session, emulator: Emulator, s3_bucket: Bucket, tmp_path: Path
) -> None:
    """The prefix's claim names its journal: another journal is refused before any create,
    even with new_journal, and the message says how to hand the prefix over."""
    out = s3_bucket.url("job")
    await _run(session, tmp_path / "a.db", out, 2)
    for new_journal in (False, True):
        with pytest.raises(OutputClaimedError) as caught:
            await _run(session, tmp_path / "b.db", out, 2, new_journal=new_journal)
        message = str(caught.value)
        assert str(tmp_path / "a.db") in message
        assert "delete the claim object" in message
    assert emulator.counters.creates == 2
    s3_bucket.delete("job/.worldrouter-job")  # handed over on purpose, images kept
    lost = r"knows 0 requests, but s3://.* holds the images of 2"  # b.db was made above
    with pytest.raises(JournalLostError, match=lost):
        await _run(session, tmp_path / "b.db", out, 2)
    await _run(session, tmp_path / "b.db", out, 2, new_journal=True)
    assert emulator.counters.creates == 4


async def test_a_journal_that_lost_records_is_refused_on_a_prefix(
    session: Session, emulator: Emulator, s3_bucket: Bucket, tmp_path: Path
) -> None:
    """The claim's high-water mark is written when the journal closes: an older copy of the
    journal put back is refused before it pays again for what it forgot."""
    journal, out = tmp_path / "j.db", s3_bucket.url("job")
    await _run(session, journal, out, 2)
    backup = journal.read_bytes()
    await _run(session, journal, out, 5)
    journal.write_bytes(backup)
    with pytest.raises(JournalLostError, match="lost records: it holds 2 requests"):
        await _run(session, journal, out, 5)
    assert emulator.counters.creates == 5


async def test_a_claim_is_created_only_where_none_exists(
    s3_bucket: Bucket, anyio_backend: str
) -> None:
    """The first claim is a conditional PUT (If-None-Match: *): of two runs claiming one
    prefix at once, the second learns the prefix is taken instead of overwriting it."""
    output = S3Output.from_url(s3_bucket.url("race"))
    assert output.create_text(".worldrouter-job", "first\n") is True
    assert output.create_text(".worldrouter-job", "second\n") is False
    assert s3_bucket.get("race/.worldrouter-job") == b"first\n"


async def test_the_gallery_is_not_written_into_a_bucket(
    session: Session, s3_bucket: Bucket, tmp_path: Path
) -> None:
    """The contact sheet and manifest are for local outputs: a bucket gets only images and
    the claim (the journal holds what the manifest would)."""
    await _run(session, tmp_path / "j.db", s3_bucket.url("job"), 1)
    assert s3_bucket.keys() == ["job/.worldrouter-job", "job/r0-0.png"]
    assert not (tmp_path / "manifest.jsonl").exists()
    refused = await _cli("gallery", s3_bucket.url("job"), "--journal", str(tmp_path / "j.db"))
    assert refused.returncode == 2
    assert b"the gallery is written beside local images only" in refused.stderr


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without obstore installed, an s3:// output says which extra to install."""
    monkeypatch.setitem(sys.modules, "obstore", None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "worldrouter-async\[s3\]"'):
        open_output("s3://bucket/prefix")


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, "needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": "k"}, "needs AWS_SECRET_ACCESS_KEY too"),
        ({"AWS_SECRET_ACCESS_KEY": SECRET_KEY}, "needs AWS_ACCESS_KEY_ID too"),
        (
            {
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": "http://minio.example:9000",
            },
            "is plain http.*AWS_ALLOW_HTTP=true",
        ),
    ],
)
def test_an_environment_that_cannot_work_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: str
) -> None:
    """Missing credentials, half a key pair, or a plain-http endpoint off loopback are
    refused when the output is opened, naming the variable to set; never the secret."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidRequestError, match=expected) as caught:
        open_output("s3://bucket/prefix")
    assert SECRET_KEY not in str(caught.value)


def test_a_bucket_url_made_into_a_path_is_refused() -> None:
    """Path("s3://b/p") is "s3:/b/p": taken as a directory it would fill a local folder
    named "s3:", so it is refused with the fix."""
    with pytest.raises(InvalidRequestError, match="pass it as a string, 's3://BUCKET/PREFIX'"):
        open_output(Path("s3://bucket/prefix"))


def test_a_plain_http_endpoint_elsewhere_is_allowed_when_asked(
    monkeypatch: pytest.MonkeyPatch, s3_bucket: Bucket
) -> None:
    """AWS_ALLOW_HTTP=true accepts a plain-http endpoint off loopback; the repr shows only
    the bucket and prefix."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.example:9000")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    output = open_output("s3://bucket/prefix/")
    assert repr(output) == "S3Output('s3://bucket/prefix')"


async def test_cli_batch_writes_into_a_bucket(
    emulator: Emulator, s3_bucket: Bucket, tmp_path: Path
) -> None:
    """`batch --out s3://... --journal PATH` runs the job into the bucket; a rerun has
    nothing left to do."""
    _write_prompts(tmp_path / "p.jsonl", 3)
    args = ["batch", str(tmp_path / "p.jsonl"), "--out", s3_bucket.url("cli"), "--plain"]
    journal = ["--journal", str(tmp_path / "j.db")]
    done = await _cli_against(emulator, *args, *journal)
    assert done.returncode == 0, done.stderr.decode()
    assert s3_bucket.keys("cli/") == [
        "cli/.worldrouter-job",
        "cli/p0-0.png",
        "cli/p1-0.png",
        "cli/p2-0.png",
    ]
    again = await _cli_against(emulator, *args, *journal, "--json")
    assert again.returncode == 0, again.stderr.decode()
    summary = json.loads(again.stdout)
    assert summary["out"] == s3_bucket.url("cli")
    assert summary["sources"] == {"journal": 3}
    assert emulator.counters.creates == 3


async def test_cli_refuses_a_bucket_without_journal_or_that_cannot_be_reached(
    emulator: Emulator, s3_bucket: Bucket, tmp_path: Path
) -> None:
    """An s3:// --out needs --journal, and a bucket that does not exist is refused before
    anything is sent; neither message shows the secret key."""
    _write_prompts(tmp_path / "p.jsonl", 1)
    args = ["batch", str(tmp_path / "p.jsonl"), "--plain"]
    no_journal = await _cli_against(emulator, *args, "--out", s3_bucket.url("x"))
    assert no_journal.returncode == 2
    assert b"pass --journal PATH" in no_journal.stderr
    missing = await _cli_against(
        emulator, *args, "--out", "s3://no-such-bucket-here/x", "--journal", str(tmp_path / "j")
    )
    assert missing.returncode == 2
    stderr = missing.stderr.decode()
    assert "cannot write images to --out s3://no-such-bucket-here/x" in stderr
    assert SECRET_KEY not in stderr
    assert emulator.counters.creates == 0
