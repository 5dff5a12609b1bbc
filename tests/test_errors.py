"""The exceptions: data they carry, under the names users coming from other SDKs expect."""

from __future__ import annotations

import pytest

import worldrouter_async as wr
from worldrouter_async.testing import Emulator


@pytest.mark.anyio
async def test_status_code_is_the_http_status_as_in_openai_python(emulator: Emulator) -> None:
    """`APIStatusError.status_code` is the answer's status, the same value as `status`."""
    async with wr.Session("wrong-key", emulator.base_url) as session:
        with pytest.raises(wr.AuthenticationError) as caught:
            await session.tasks.create("gpt-image-2", "a star")
    assert caught.value.status_code == caught.value.status == 401
    assert caught.value.request_id
