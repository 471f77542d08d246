"""``switchyard acp``'s process: stdio for the protocol alone, logs to a file, the SDK's
agent loop, and a clean end (every run at work sealed) when the client hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from app.acp.stdio import log_to_file, protocol_streams, stream_problem, take_protocol_fds
from app.errors import UsageError

if TYPE_CHECKING:
    from app.config import Settings
    from app.policy.schema import Policy

log = logging.getLogger("app.acp")


def log_path(settings: Settings) -> Path:
    return settings.data_dir / "logs" / "acp.log"


def serve(settings: Settings, policy: Policy, *, repo: Path | None, local_only: bool) -> int:
    """Serve ACP on this process's stdin/stdout until the client closes stdin."""
    for fd, name in ((0, "stdin"), (1, "stdout")):
        problem = stream_problem(fd)
        if problem is not None:  # said on stderr, before it goes to the log
            raise UsageError(
                f"acp speaks the Agent Client Protocol over stdin and stdout, and {name} is"
                f" {problem}: an editor (Zed, Toad) starts it with pipes"
            )
    path = log_path(settings)
    log_to_file(path)
    in_fd, out_fd = take_protocol_fds(path)
    log.info("switchyard acp: serving (repo %s, local_only %s)", repo or "from cwd", local_only)
    terminated = asyncio.run(
        _main(settings, policy, repo=repo, local_only=local_only, fds=(in_fd, out_fd))
    )
    if terminated:  # 143, as every command stopped by SIGTERM (it was 0: an ACP audit)
        return 128 + signal.SIGTERM
    log.info("switchyard acp: the client closed the connection")
    return 0


async def _main(
    settings: Settings,
    policy: Policy,
    *,
    repo: Path | None,
    local_only: bool,
    fds: tuple[int, int],
) -> bool:
    """Serve until the client hangs up; True when SIGTERM ended it."""
    from acp import run_agent

    from app.acp.agent import SwitchyardAgent

    agent = SwitchyardAgent(settings, policy, local_only=local_only, repo=repo)
    writer, reader = await protocol_streams(*fds, hang_up=agent.hang_up)
    # an editor ends its agent with SIGTERM: stop like a hang-up, runs sealed on the way out
    main = asyncio.current_task()
    terminated: list[bool] = []
    with contextlib.suppress(NotImplementedError, RuntimeError):
        if main is not None:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, _terminated, agent, main, terminated
            )
    try:
        # the SDK's Agent is a Protocol; this agent implements the methods it serves
        await run_agent(cast(Any, agent), writer, reader)
    except asyncio.CancelledError:
        log.info("switchyard acp: terminated")
    finally:
        await agent.shutdown()
    # (the SDK's loop may end on the cancel without raising it: the signal is what counts)
    return bool(terminated)


def _terminated(agent: Any, main: asyncio.Task[Any], terminated: list[bool]) -> None:
    """SIGTERM: the runs at work are recorded as ended by it (the user cancelled none),
    then the agent stops as on a hang-up."""
    agent.pool.mark_turns("cancelled: the agent was terminated (SIGTERM)")
    terminated.append(True)
    main.cancel()
