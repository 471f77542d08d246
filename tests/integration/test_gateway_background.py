"""`switchyard serve &`: a gateway started as a shell's background job, with the default
``--approve ask``. Its first escalation flushed and read the terminal from the
background: the kernel stopped the whole process (SIGTTOU, "Stopped (tty output)"), and
every client hung until ``fg`` (a user audit). Asking is impossible while it is in the
background: the escalation is denied, audited, and served locally; after ``fg`` the next
one is asked on the terminal again.

A real pseudo-terminal: a small "shell" is the session leader that owns it, and starts
``serve`` in a process group of its own, as ``&`` does; ``fg`` is its ``tcsetpgrp``.
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
from collections.abc import Callable
from pathlib import Path

import openai

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.integration.test_gateway import REPLY, lines_of, said_until_listening
from tests.reliability.kit import LOCAL_MODELS, closed_port

#: the job-control shell: owns the terminal, runs its arguments as a background job,
#: says the job's pid, forwards SIGTERM to it, and brings it to the foreground on SIGUSR1
#: (``fg``); a job the terminal stops (SIGTTOU, SIGTTIN) is said and killed
SHELL = """
import fcntl, os, signal, subprocess, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
job = subprocess.Popen(sys.argv[1:], stdin=0, stdout=subprocess.DEVNULL, process_group=0)
print(job.pid, flush=True)
signal.signal(signal.SIGTERM, lambda *_: os.kill(job.pid, signal.SIGTERM))

def fg(*_):
    os.tcsetpgrp(0, job.pid)
    print("fg", flush=True)

signal.signal(signal.SIGUSR1, fg)
while True:
    _, status = os.waitpid(job.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        print("stopped", signal.Signals(os.WSTOPSIG(status)).name, flush=True)
        os.kill(job.pid, signal.SIGKILL)
        continue
    sys.exit(os.waitstatus_to_exitcode(status))
"""

ASKED = [{"role": "user", "content": "plan the fix"}]


def test_serve_in_the_background_denies_escalations_and_asks_again_after_fg(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
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
    job = int(shell.stdout.readline())
    try:
        said = said_until_listening(shell)
        url = said[-1].split()[4]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)

        # in the background: denied at once, served locally; the job was never stopped
        reply = client.chat.completions.create(model="architect+escalate", messages=ASKED)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == REPLY
        assert shell.poll() is None
        (denial,) = lines_of("denial")
        assert denial["provenance"]["approver"] == "terminal"
        assert "background job" in denial["detail"], denial["detail"]
        assert cloud.chat_requests == []
        assert any("this is a background job: escalations are denied" in s for s in said), said

        # `fg`: the next escalation is asked on the terminal, and a "y" sends it out
        shell.send_signal(signal.SIGUSR1)
        assert shell.stdout.readline() == "fg\n"
        told: list[str] = []
        answered: list[str | None] = []
        errors = shell.stderr

        def hear() -> None:  # (the prompt ends in no newline: read as it comes)
            told.extend(iter(lambda: errors.read(1), ""))

        def ask() -> None:
            reply = client.chat.completions.create(model="architect+escalate", messages=ASKED)  # type: ignore[arg-type]
            answered.append(reply.choices[0].message.content)

        threading.Thread(target=hear, daemon=True).start()
        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        for _ in range(3000):  # (a guard against a hang, not a timing)
            if "Approve?" in "".join(told) or not asking.is_alive():
                break
            time.sleep(0.02)
        assert "Approve?" in "".join(told), "".join(told)
        os.write(leader, b"y\n")
        asking.join(60)
        assert answered == ["A plan from GPT."], "".join(told)
        assert len(cloud.chat_requests) == 1
    finally:
        shell.terminate()  # (forwarded to serve)
        try:
            shell.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in (job, shell.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shell.wait(timeout=30)
        os.close(leader)
    assert shell.stdout.read() == ""  # the job was never stopped by the terminal
