"""`switchyard serve --approve ask` asks on its terminal, and says how to answer: a line,
the letter then Enter. It said "by keypress", and a "y" typed alone waited out the
timeout and was denied (a user audit). A real pseudo-terminal, the job-control shell of
:mod:`tests.integration.test_gateway_background` bringing serve to the foreground."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.test_gateway_background import serve_as_a_job


def echoed(leader: int, text: bytes) -> bytes:
    """What the terminal shows of the keys typed, read until ``text`` is there."""
    seen = b""
    while text not in seen:
        piece = os.read(leader, 1024)
        assert piece, seen
        seen += piece
    return seen


def test_the_prompt_says_to_press_enter_and_the_letter_with_enter_answers(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    with serve_as_a_job(tmp_path, fake_openai_factory, fake_anthropic_factory) as job:
        assert any("fg to bring it to the foreground and approve here" in s for s in job.said)
        job.shell_says(signal.SIGUSR1, "fg\n")
        job.hear()
        answered: list[str | None] = []
        asking = job.escalate(answered)
        assert job.shown("(type the letter, then Enter): "), "".join(job.told)

        # not an answer: asked again, saying how to answer
        since = len("".join(job.told))
        os.write(job.leader, b"sure\n")
        assert job.shown("Please type y, a, n or d, then Enter.\nApprove?", since), "".join(
            job.told
        )

        # "y" alone is on the terminal's line, not yet an answer; Enter sends it
        os.write(job.leader, b"y")
        echoed(job.leader, b"y")
        assert answered == [] and job.cloud.chat_requests == []
        os.write(job.leader, b"\n")
        asking.join(60)
        assert answered == ["A plan from GPT."], "".join(job.told)
        assert len(job.cloud.chat_requests) == 1
