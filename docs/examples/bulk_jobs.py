"""A bulk job from JSON Lines through the journal; running it again resumes it."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import worldrouter_async as wr
from worldrouter_async.batch import BatchItem, BatchRunner, LineError, iter_jsonl


def write_sample_prompts(path: Path) -> None:
    """Setup for this example: ten prompts, each with an id (keys survive edits to the file)."""
    lines = (json.dumps({"id": f"kite-{i}", "prompt": f"a kite, #{i}"}) for i in range(10))
    path.write_text("\n".join(lines))


def requests(path: Path) -> Iterator[BatchItem]:
    """The file's requests, read lazily (any size fits in memory); bad lines are reported."""
    for parsed in iter_jsonl(path, defaults={"model": "gpt-image-2"}):
        if isinstance(parsed, LineError):
            print("skipped", parsed)
        else:
            yield parsed


async def main() -> None:
    prompts = Path("prompts.jsonl")
    write_sample_prompts(prompts)
    async with wr.Session() as session:
        for attempt in ("first run", "rerun: everything comes from the journal"):
            async with BatchRunner(session, "job.sqlite3", out_dir="images") as runner:
                async for outcome in runner.run(requests(prompts)):
                    print(outcome.key, outcome.kind, outcome.source, outcome.files)
            print(attempt, runner.summary)


if __name__ == "__main__":
    asyncio.run(main())
