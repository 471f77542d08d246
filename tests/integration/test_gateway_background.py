"""`switchyard serve &`: a gateway started as a shell's background job, with the default
``--approve ask``. Its first escalation flushed and read the terminal from the
background: the kernel stopped the whole process (SIGTTOU, "Stopped (tty output)"), and
every client hung until ``fg`` (a user audit). Asking is impossible while it is in the
background: the escalation is denied, audited, and served locally; after ``fg`` the next
one is asked on the terminal again.

A real pseudo-terminal: a small "shell" is the session leader that owns it, and starts
``serve`` in a process group of its own, as ``&`` does; ``fg`` is its ``tcsetpgrp``, and
Ctrl-Z then ``bg`` its taking the terminal back and continuing the job.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.integration.test_gateway import REPLY, lines_of, said_until_listening
from tests.reliability.kit import LOCAL_MODELS, closed_port

#: the job-control shell: owns the terminal, runs its arguments as a background job,
#: says the job's pid, forwards SIGTERM to it, and brings it to the foreground on SIGUSR1
#: (``fg``); a job stopped by SIGTSTP (Ctrl-Z) is put in the background and continued
#: (``bg``); a job the terminal stops (SIGTTOU, SIGTTIN) is said and killed
SHELL = """
import fcntl, os, signal, subprocess, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
job = subprocess.Popen(sys.argv[1:], stdin=0, stdout=subprocess.DEVNULL, process_group=0)
print(job.pid, flush=True)
signal.signal(signal.SIGTERM, lambda *_: os.kill(job.pid, signal.SIGTERM))
# (after the job started: an ignored signal is inherited, and the job's must be its own)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a shell takes its terminal back from bg

def fg(*_):
    os.tcsetpgrp(0, job.pid)
    os.killpg(job.pid, signal.SIGCONT)
    print("fg", flush=True)

signal.signal(signal.SIGUSR1, fg)
while True:
    _, status = os.waitpid(job.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTSTP:
        os.tcsetpgrp(0, os.getpgrp())
        os.killpg(job.pid, signal.SIGCONT)
        print("bg", flush=True)
        continue
    if os.WIFSTOPPED(status):
        print("stopped", signal.Signals(os.WSTOPSIG(status)).name, flush=True)
        os.kill(job.pid, signal.SIGKILL)
        continue
    sys.exit(os.waitstatus_to_exitcode(status))
"""

ASKED = [{"role": "user", "content": "plan the fix"}]


@dataclass
class Job:
    """``serve`` run by :data:`SHELL` on a pseudo-terminal (``leader`` is its other end)."""

    shell: subprocess.Popen[str]
    pid: int
    leader: int
    said: list[str]
    client: openai.OpenAI
    cloud: FakeOpenAIServer
    #: what serve writes to its stderr after its "listening on" line, once heard
    told: list[str] = field(default_factory=list)

    def hear(self) -> None:
        errors = self.shell.stderr
        assert errors is not None

        def read() -> None:  # (the prompt ends in no newline: read as it comes)
            self.told.extend(iter(lambda: errors.read(1), ""))

        threading.Thread(target=read, daemon=True).start()

    def shown(self, text: str, since: int = 0) -> bool:
        for _ in range(3000):  # (a guard against a hang, not a timing)
            if text in "".join(self.told)[since:]:
                return True
            time.sleep(0.02)
        return False

    def shell_says(self, signum: int | None, line: str) -> None:
        assert self.shell.stdout is not None
        if signum is not None:
            self.shell.send_signal(signum)
        assert self.shell.stdout.readline() == line

    def escalate(self, answered: list[str | None]) -> threading.Thread:
        def ask() -> None:
            reply = self.client.chat.completions.create(model="architect+escalate", messages=ASKED)  # type: ignore[arg-type]
            answered.append(reply.choices[0].message.content)

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        return asking


@contextlib.contextmanager
def serve_as_a_job(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
    **env_extra: str,
) -> Iterator[Job]:
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply=REPLY)
    cloud = fake_openai_factory("openai", default_reply="A plan from GPT.")
    claude = fake_anthropic_factory()
    env = {
        **os.environ,
        "SWITCHYARD_VLLM_URL": vllm.base_url,
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "SWITCHYARD_POLICY": str(
            policy_pointing(tmp_path, openai=cloud.base_url, anthropic=claude.url)
        ),
        "OPENAI_API_KEY": "sk-gateway-test-openai-0123456789",
        **env_extra,
    }
    leader, follower = pty.openpty()
    shell = subprocess.Popen(
        [sys.executable, "-c", SHELL, sys.executable, "-m", "app", "serve", "--port", "0"],
        env=env,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # (serve's own stderr: the job inherits it)
        text=True,
        start_new_session=True,
    )
    os.close(follower)
    assert shell.stdout is not None and shell.stderr is not None
    pid = int(shell.stdout.readline())
    try:
        said = said_until_listening(shell)
        url = said[-1].split()[4]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        yield Job(shell, pid, leader, said, client, cloud)
    finally:
        shell.terminate()  # (forwarded to serve)
        try:
            shell.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for p in (pid, shell.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            shell.wait(timeout=30)
        os.close(leader)
    assert shell.stdout.read() == ""  # the job was never stopped by the terminal


def test_serve_in_the_background_denies_escalations_and_asks_again_after_fg(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    with serve_as_a_job(tmp_path, fake_openai_factory, fake_anthropic_factory) as job:
        # in the background: denied at once, served locally; the job was never stopped
        reply = job.client.chat.completions.create(model="architect+escalate", messages=ASKED)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == REPLY
        assert job.shell.poll() is None
        (denial,) = lines_of("denial")
        assert denial["provenance"]["approver"] == "terminal"
        assert "background job" in denial["detail"], denial["detail"]
        assert job.cloud.chat_requests == []
        assert any("this is a background job: escalations are denied" in s for s in job.said)

        # `fg`: the next escalation is asked on the terminal, and a "y" sends it out
        job.shell_says(signal.SIGUSR1, "fg\n")
        job.hear()
        answered: list[str | None] = []
        asking = job.escalate(answered)
        assert job.shown("Approve?"), "".join(job.told)
        os.write(job.leader, b"y\n")
        asking.join(60)
        assert answered == ["A plan from GPT."], "".join(job.told)
        assert len(job.cloud.chat_requests) == 1


def test_serve_moved_to_the_background_after_a_prompt_timed_out_keeps_serving(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    """A prompt timed out in the foreground, and its read of the terminal went on; then
    Ctrl-Z and ``bg``: the kernel restarted that read from the background and stopped
    the whole process (SIGTTIN), every client hung until ``fg`` (a review)."""
    with serve_as_a_job(
        tmp_path, fake_openai_factory, fake_anthropic_factory, SWITCHYARD_APPROVAL_TIMEOUT_S="1"
    ) as job:
        job.shell_says(signal.SIGUSR1, "fg\n")
        job.hear()
        answered: list[str | None] = []
        asking = job.escalate(answered)
        assert job.shown("Approve?"), "".join(job.told)
        asking.join(60)  # nobody answers: denied at its timeout, served locally
        assert answered == [REPLY], "".join(job.told)
        assert "timed out after 1s" in "".join(job.told)

        # Ctrl-Z, then `bg`: the job keeps serving, the terminal's read left pending
        os.killpg(job.pid, signal.SIGTSTP)
        job.shell_says(None, "bg\n")
        reply = job.client.chat.completions.create(
            model="implementer", messages=[{"role": "user", "content": "why?"}]
        )
        assert reply.choices[0].message.content == REPLY
        assert job.shell.poll() is None

        # `fg`: the next escalation is asked again, and a "y" sends it out
        job.shell_says(signal.SIGUSR1, "fg\n")
        since = len("".join(job.told))
        asking = job.escalate(answered)
        assert job.shown("Approve?", since), "".join(job.told)
        os.write(job.leader, b"y\n")
        asking.join(60)
        assert answered == [REPLY, "A plan from GPT."], "".join(job.told)
        assert len(job.cloud.chat_requests) == 1
