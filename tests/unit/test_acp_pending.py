"""The ACP guard's list of requests still to answer before a hang-up (app/acp/stdio.py)."""

from __future__ import annotations

import asyncio

from app.acp.stdio import Pending


async def test_a_response_written_takes_its_request_off_the_list() -> None:
    pending = Pending()
    pending.asked(1)
    pending.asked("two")
    pending.answered(b'{"jsonrpc":"2.0","method":"session/update","params":{"x":"result"}}\n')
    pending.answered(b'{"jsonrpc":"2.0","id":1,"result":{}}\n')
    assert pending.ids == {"two"}
    pending.answered(b'{"jsonrpc":"2.0","id":"two","error":{"code":-32600,"message":"m"}}\n')
    assert await asyncio.wait_for(pending.all_answered(3600, lambda: False), 5)


async def test_a_client_that_can_read_nothing_more_is_not_waited_for() -> None:
    """The editor gone whole (both pipes closed): the SDK's writer died, nothing more is
    written, and the agent lingered the full wait with its model loaded."""
    pending = Pending()
    pending.asked(7)
    answered = await asyncio.wait_for(pending.all_answered(3600, lambda: True), 5)
    assert answered is False and pending.ids == {7}
