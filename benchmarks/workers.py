"""Throughput of 1, 2 and 4 workers sharing one bulk job, and database round trips per request.

Every worker is ``worldrouter-async batch`` in its own process running the same command
(``--journal postgresql://... --job NAME --out s3://BUCKET/PREFIX``), as the pods of a
Kubernetes Job would, against three servers on loopback, each in its own process: the
emulator with a rate limit, PostgreSQL from the ``pgserver`` wheel's binaries, and moto's
S3 server. Each run is a fresh job in a fresh database.

    pip install -e ".[bench,test]"   # test brings psycopg, pgserver, obstore and moto
    python benchmarks/workers.py --out workers.md
    python benchmarks/workers.py --runs 1x8 4x8 --prompts 400 --rate-limit 40 --repeats 3

Reported per run (workers x each one's ``--concurrency``): wall time from the first
worker's start to the last one's exit (process start-up included), images per second, API
requests per second (creates and polls the emulator served) and 429s, how many requests
each worker created itself (from its ``--json`` summary: how the job spread), and the
database work per request: statements (counted in the server's log, written with
``log_statement=all``) and transactions (``pg_stat_database.xact_commit``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from run import emulator_stats  # benchmarks/ is on sys.path when a script here runs

API_KEY = "test-key"
BUCKET = "bench"
#: Any key pair works against moto; the region must be set for the client to sign.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: One log line per statement the server ran: simple or extended query protocol.
STATEMENT = re.compile(r"^db=(\S+) LOG:  (?:statement|execute [^:]*):", re.MULTILINE)


INITDB_OPTIONS = ("-U", "postgres", "--auth=trust", "--encoding=utf8")


_databases = itertools.count()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the servers ---------------------------------------------------------------------------


class Postgres:
    """A PostgreSQL server from the pgserver wheel's binaries, on 127.0.0.1, logging statements."""

    def __init__(self, scratch: Path) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.dir = scratch / "postgres"
        self.dir.mkdir()
        self.log = self.dir / "server.log"
        self.port = _free_port()
        # PostgreSQL refuses to run as root; pgserver runs it as its own system user.
        self.user = "pgserver" if os.geteuid() == 0 else None
        if self.user is not None:
            from pgserver.utils import ensure_folder_permissions, ensure_user_exists

            ensure_user_exists(self.user)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(self.bin, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self.bin.parent / "lib", readable)
            scratch.chmod(0o755)
            shutil.chown(self.dir, self.user)

    def url(self, database: str) -> str:
        """The URL a worker's ``--journal`` takes for `database`."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), *args],
            user=self.user,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Initialise a data directory and start the server (a second or so)."""
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.dir / "data"), *INITDB_OPTIONS],
            user=self.user,
            check=True,
            capture_output=True,
        )
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c log_statement=all "
            "-c log_line_prefix='db=%d '"
        )
        self._ctl("-w", "-l", str(self.log), "-o", options, "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown)."""
        self._ctl("-w", "-m", "fast", "stop")

    def sql(
        self, query: str, params: tuple[Any, ...] = (), database: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run `query` in autocommit mode; its rows (none for a command)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:
            cursor = connection.execute(query.encode(), params)
            return cursor.fetchall() if cursor.description else []

    def statements(self, database: str) -> int:
        """Statements run in `database` so far, counted in the server's log."""
        text = self.log.read_text(errors="replace")
        return sum(1 for match in STATEMENT.finditer(text) if match[1] == database)

    def transactions(self, database: str) -> int:
        """Transactions committed in `database` so far (``pg_stat_database``)."""
        self.sql("SELECT pg_stat_clear_snapshot()")
        rows = self.sql("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,))
        return int(rows[0][0])


@contextmanager
def postgres(scratch: Path) -> Iterator[Postgres]:
    """A running `Postgres`, stopped on exit."""
    server = Postgres(scratch)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def process(command: list[str], *, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running, its output in `log`; terminated on exit."""
    with log.open("wb") as output:
        running = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield running
    finally:
        running.terminate()
        running.wait(timeout=10)


@contextmanager
def s3(scratch: Path) -> Iterator[str]:
    """moto's S3 server with the benchmark's bucket; yields its endpoint URL."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(command, log=scratch / "moto.log"):
        client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        for _ in range(200):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # not listening yet
                time.sleep(0.05)
        yield endpoint


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
    }


@contextmanager
def emulator(scratch: Path, args: argparse.Namespace) -> Iterator[str]:
    """The emulator in its own process with the rate limit; yields its base URL."""
    command = [sys.executable, "-m", "worldrouter_async", "emulator", "--port", "0"]
    command += ["--time-scale", str(args.time_scale), "--seed", "1"]
    command += ["--rate-limit", str(args.rate_limit), "--burst", str(args.burst)]
    log = scratch / "emulator.log"
    with process(command, log=log):
        for _ in range(400):
            words = log.read_text().split()
            if base_url := next((w for w in words if w.startswith("http")), None):
                yield base_url
                return
            time.sleep(0.025)
        raise RuntimeError(f"the emulator did not start: {log.read_text()}")


# --- one measurement -------------------------------------------------------------------------


def write_prompts(path: Path, count: int) -> None:
    """`count` distinct prompts, one JSON object per line."""
    lines = (json.dumps({"id": f"p{i:05d}", "prompt": f"a lighthouse, #{i}"}) for i in range(count))
    path.write_text("\n".join(lines) + "\n")


def measure(
    workers: int,
    concurrency: int,
    args: argparse.Namespace,
    *,
    pg: Postgres,
    endpoint: str,
    scratch: Path,
) -> dict[str, Any]:
    """Run one job with `workers` workers to its end, in a fresh database; its row."""
    database = f"bench_{next(_databases)}"
    pg.sql(f"CREATE DATABASE {database}")
    prompts = scratch / "prompts.jsonl"
    with emulator(scratch, args) as base_url:
        command = [sys.executable, "-m", "worldrouter_async", "batch", str(prompts)]
        command += ["--journal", pg.url(database), "--job", "bench"]
        command += ["--out", f"s3://{BUCKET}/{database}", "--plain"]
        command += ["--concurrency", str(concurrency), "--base-url", base_url]
        # The default poll policy, scaled like the emulator's clock (as run.py does).
        command += ["--poll-initial", str(2.0 * args.time_scale)]
        command += ["--poll-max", str(8.0 * args.time_scale)]
        env = os.environ | AWS_ENV | {"AWS_ENDPOINT_URL": endpoint, "WORLDROUTER_API_KEY": API_KEY}
        statements, transactions = pg.statements(database), pg.transactions(database)
        started = time.perf_counter()
        logs = [scratch / f"{database}-worker-{i}.log" for i in range(workers)]
        running = []
        for log in logs:  # progress lines to a file: a full pipe would stall the worker
            with log.open("wb") as stderr:
                running.append(
                    subprocess.Popen(
                        [*command, "--json"], env=env, stdout=subprocess.PIPE, stderr=stderr
                    )
                )
        outputs = [p.communicate(timeout=args.deadline)[0] for p in running]
        wall = time.perf_counter() - started
        codes = [p.returncode for p in running]
        if any(codes):
            failed = logs[codes.index(max(codes))].read_text()[-2000:]
            raise RuntimeError(f"a worker failed ({codes}): {failed}")
        # Each worker's summary says how many requests it created itself ("new").
        created = [json.loads(out.splitlines()[-1])["sources"].get("new", 0) for out in outputs]
        server = emulator_stats(base_url)
    # Log lines reach the file a moment after the statement: give the logger a beat.
    time.sleep(0.5)
    requests = server["create_requests"] + server["polls"]
    n = args.prompts
    return {
        "workers": workers,
        "concurrency": concurrency,
        "prompts": n,
        "wall_s": wall,
        "images_per_s": n / wall,
        "api_requests_per_image": requests / n,
        "api_rps": requests / wall,
        # The median whole second: the rate while saturated, not diluted by start and tail.
        "median_second_rps": statistics.median(sorted(server["per_second"].values())[1:-1] or [0]),
        "rate_limited_429": server["rate_limited"],
        "created_by_each_worker": "/".join(str(n) for n in sorted(created, reverse=True)),
        "db_statements_per_request": (pg.statements(database) - statements) / n,
        "db_transactions_per_request": (pg.transactions(database) - transactions) / n,
    }


COLUMNS = [
    "workers",
    "concurrency",
    "prompts",
    "wall_s",
    "images_per_s",
    "api_requests_per_image",
    "api_rps",
    "median_second_rps",
    "rate_limited_429",
    "created_by_each_worker",
    "db_statements_per_request",
    "db_transactions_per_request",
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def _run(text: str) -> tuple[int, int]:
    """``4x8``: four workers, each with ``--concurrency 8``."""
    workers, _, concurrency = text.partition("x")
    return int(workers), int(concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--runs",
        type=_run,
        nargs="+",
        default=[(1, 8), (2, 8), (4, 8), (4, 2)],
        metavar="WORKERSxCONCURRENCY",
        help="jobs to run: how many workers, each with which --concurrency (default: 1x8 2x8 "
        "4x8 4x2)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (the median shown)")
    parser.add_argument("--prompts", type=int, default=3000)
    parser.add_argument("--rate-limit", type=float, default=100.0, help="API requests per second")
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--time-scale", type=float, default=0.04)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds per job at most")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="worldrouter-workers-") as name:
        scratch = Path(name)
        write_prompts(scratch / "prompts.jsonl", args.prompts)
        with postgres(scratch) as pg, s3(scratch) as endpoint:
            rows = []
            for workers, concurrency in args.runs:
                runs = [
                    measure(workers, concurrency, args, pg=pg, endpoint=endpoint, scratch=scratch)
                    for _ in range(args.repeats)
                ]
                rows.append(sorted(runs, key=lambda r: r["images_per_s"])[args.repeats // 2])
    header = [
        f"Command: `python benchmarks/workers.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}  ",
        f"Emulator: rate limit {args.rate_limit:g} requests/s (burst {args.burst:g}), time "
        f"scale {args.time_scale} (a 25 s generation takes {25 * args.time_scale:g} s); "
        f"{args.prompts} prompts per job; "
        f"{'one run' if args.repeats == 1 else f'median of {args.repeats} runs'} per row; "
        f"harness wall time {time.perf_counter() - started:,.0f} s.",
        "",
        table(rows),
    ]
    text = "\n".join(header) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
