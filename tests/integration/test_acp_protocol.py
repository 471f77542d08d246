"""``switchyard acp`` on bad input: JSON-RPC errors, never a crash, nothing but protocol on
stdout (issue 15).

These tests are the client, byte for byte: they write lines to the agent's stdin (some of
them malformed on purpose) and read every line of its stdout, which must each be a
JSON-RPC 2.0 message. Well-formed requests go through the SDK's client side elsewhere
(test_acp_agent.py); here the point is what a broken client could send.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.demo_repo import git, make_repo
from tests.integration.acp_kit import agent_env

#: a guard against a hung agent, not a measurement
WAIT_S = 60


class RawClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def write(self, line: bytes | dict[str, Any]) -> None:
        data = line if isinstance(line, bytes) else json.dumps(line).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(data + b"\n")
        await self.proc.stdin.drain()

    async def request(self, rid: int, method: str, params: Any) -> None:
        await self.write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})

    async def read_until(self, done: Any) -> None:
        async def loop() -> None:
            assert self.proc.stdout is not None
            while not done(self.lines):
                raw = await self.proc.stdout.readline()
                assert raw, "the agent closed its stdout"
                message = json.loads(raw)  # every line is JSON ...
                assert message["jsonrpc"] == "2.0"  # ... and JSON-RPC 2.0
                self.lines.append(message)

        await asyncio.wait_for(loop(), WAIT_S)

    def reply(self, rid: Any) -> dict[str, Any]:
        (found,) = [m for m in self.lines if "method" not in m and m.get("id") == rid]
        return found

    def null_id_errors(self) -> list[int]:
        return [m["error"]["code"] for m in self.lines if m.get("id") is None and "error" in m]


async def spawn(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "acp",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=agent_env(PATH="/usr/bin:/bin", HOME=str(cwd)),
    )


async def test_bad_input_gets_json_rpc_errors_and_the_agent_stays_up(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    # not JSON; JSON that is no object; an id that is no id; a notification nobody knows
    await c.write(b"this is not json {")
    await c.write(b"[1, 2, 3]")
    await c.write({"jsonrpc": "2.0", "id": {"no": "id"}, "method": "initialize"})
    await c.write({"jsonrpc": "2.0", "method": "no/such_notification", "params": {}})
    # a fractional id: answered with its own id (it was null, "must be a number" said of it)
    await c.write({"jsonrpc": "2.0", "id": 1.5, "method": "initialize"})
    await c.request(1, "initialize", {"protocolVersion": 1})
    await c.request(2, "no/such_method", {})
    await c.request(3, "session/new", {"cwd": str(plain), "mcpServers": []})
    await c.request(4, "session/new", {"mcpServers": []})  # no cwd
    await c.request(5, "session/new", {"cwd": str(repo), "mcpServers": []})
    await c.read_until(lambda lines: any(m.get("id") == 5 for m in lines))
    assert "result" in c.reply(5), c.reply(5)
    session = c.reply(5)["result"]["sessionId"]
    image = {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}
    await c.request(6, "session/prompt", {"sessionId": session, "prompt": [image]})
    await c.request(
        7, "session/prompt", {"sessionId": "nope", "prompt": [{"type": "text", "text": "x"}]}
    )
    await c.request(8, "session/set_mode", {"sessionId": session, "modeId": "yolo"})
    await c.request(9, "session/cancel", {"sessionId": session})  # a request, not a notification
    await c.read_until(lambda lines: {6, 7, 8, 9} <= {m.get("id") for m in lines})

    assert sorted(c.null_id_errors()) == [-32700, -32600, -32600]
    fraction = c.reply(1.5)["error"]
    assert fraction["code"] == -32600 and "an integer" in fraction["data"]["details"]
    assert c.reply(1)["result"]["protocolVersion"] == 1
    assert c.reply(2)["error"]["code"] == -32601
    not_git = c.reply(3)["error"]
    assert (
        not_git["code"] == -32602 and f"cwd {plain} is not a git repository" in not_git["message"]
    )
    assert c.reply(4)["error"]["code"] == -32602
    no_text = c.reply(6)["error"]
    assert no_text["code"] == -32602 and "the prompt has no text" in no_text["message"]
    assert "unknown session 'nope'" in c.reply(7)["error"]["message"]
    assert "unknown mode 'yolo'" in c.reply(8)["error"]["message"]
    assert c.reply(9)["error"]["code"] == -32601
    # still serving after all that; then a clean exit when the client hangs up
    await c.request(10, "initialize", {"protocolVersion": 1})
    await c.read_until(lambda lines: any(m.get("id") == 10 for m in lines))
    assert c.reply(10)["result"]["agentInfo"]["name"] == "switchyard"
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    assert proc.stdout is not None and proc.stderr is not None
    assert await proc.stdout.read() == b""  # nothing but the replies above
    assert await proc.stderr.read() == b""  # diagnostics went to the log file
    log = Path(agent_env()["SWITCHYARD_DATA_DIR"]) / "logs" / "acp.log"
    assert "answered a bad message with -32700" in log.read_text()


async def test_a_pinned_repository_refuses_a_session_elsewhere(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "served")
    other = make_repo(tmp_path / "other")
    proc = await spawn("--repo", str(repo), cwd=repo)
    c = RawClient(proc)
    await c.request(1, "initialize", {"protocolVersion": 1})
    await c.request(2, "session/new", {"cwd": str(other), "mcpServers": []})
    await c.request(3, "session/new", {"cwd": str(repo / "tests"), "mcpServers": []})
    await c.read_until(lambda lines: {2, 3} <= {m.get("id") for m in lines})
    refused = c.reply(2)["error"]
    assert (
        refused["code"] == -32602
        and f"outside the repository this agent serves ({repo}" in (refused["message"])
    )
    assert "sessionId" in c.reply(3)["result"]  # a folder inside the repository is fine
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0


def test_a_broken_policy_is_one_line_on_stderr_before_any_protocol(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text("[budget\n")
    done = subprocess.run(
        [sys.executable, "-m", "app", "acp", "--policy", str(bad)],
        input=b"",
        capture_output=True,
        cwd=tmp_path,
        env=agent_env(PATH="/usr/bin:/bin", HOME=str(tmp_path)),
        check=False,
    )
    assert done.returncode == 2 and done.stdout == b""
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith(f"switchyard: {bad}")


def test_a_data_dir_that_cannot_hold_the_log_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A file where the data folder should be: a NotADirectoryError traceback on stderr
    (every other command says it in one line; an ACP audit)."""
    in_the_way = tmp_path / "data"
    in_the_way.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "app", "acp"],
        input=b"",
        capture_output=True,
        cwd=tmp_path,
        env=agent_env(
            PATH="/usr/bin:/bin", HOME=str(tmp_path), SWITCHYARD_DATA_DIR=str(in_the_way)
        ),
        check=False,
        timeout=WAIT_S,
    )
    assert done.returncode == 2 and done.stdout == b""
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith(f"switchyard: cannot use the folder {in_the_way}")
    assert "Not a directory" in line


async def test_requests_sent_just_before_the_hang_up_are_answered(tmp_path: Path) -> None:
    """The client writes and closes stdin at once (``printf … | switchyard acp``): the SDK
    cancelled the session/new still at work, which got no answer, and its half-opened
    stores were left to a closed loop (tracebacks in the log)."""
    repo = make_repo(tmp_path)
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    await c.request(1, "initialize", {"protocolVersion": 1})
    await c.request(2, "session/new", {"cwd": str(repo), "mcpServers": []})
    assert proc.stdin is not None
    proc.stdin.close()
    await c.read_until(lambda lines: {1, 2} <= {m.get("id") for m in lines})
    assert "sessionId" in c.reply(2)["result"]
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    log = Path(agent_env()["SWITCHYARD_DATA_DIR"]) / "logs" / "acp.log"
    assert "Traceback" not in log.read_text()


async def test_a_message_too_long_to_take_is_answered_with_its_id(tmp_path: Path) -> None:
    """A prompt over the 50 MB a line may hold was answered with an id-less error: an SDK
    client waited on that request for good. The id comes before the bulk (as clients write
    it), so the error answers it; a response or a notification is never answered so."""
    from app.acp.stdio import LIMIT

    repo = make_repo(tmp_path)
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    await c.request(1, "initialize", {"protocolVersion": 1})
    await c.request(2, "session/new", {"cwd": str(repo), "mcpServers": []})
    await c.read_until(lambda lines: any(m.get("id") == 2 for m in lines))
    session = c.reply(2)["result"]["sessionId"]
    bulk = [{"type": "text", "text": "x" * (LIMIT + 1024)}]
    await c.request(3, "session/prompt", {"sessionId": session, "prompt": bulk})
    await c.request(4, "initialize", {"protocolVersion": 1})  # still serving after it
    await c.read_until(lambda lines: {3, 4} <= {m.get("id") for m in lines})
    error = c.reply(3)["error"]
    assert error["code"] == -32600 and f"over {LIMIT} bytes" in json.dumps(error)
    assert c.null_id_errors() == []
    assert c.reply(4)["result"]["protocolVersion"] == 1
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0


def test_the_id_of_a_message_too_long_is_read_from_its_first_members() -> None:
    from app.acp.stdio import leading_id

    head = b'{"jsonrpc": "2.0", "id": 11, "method": "session/prompt", "params": {"p": "xx'
    assert leading_id(head) == 11
    assert leading_id(b'{ "id" : "r-1" ,\n"method":"m","params":[1,') == "r-1"
    for head in (
        b'{"jsonrpc": "2.0", "method": "session/cancel", "params": {"p": "xx',  # no id
        b'{"params": {"id": 3, "p": "xx',  # an id inside the bulk is not the message's
        b'{"id": 5, "result": {"p": "xx',  # a response: never answered
        b'{"id": true, "method": "m", "params": "xx',  # no id JSON-RPC allows
        b'{"id": 5, "params": "xx',  # the method after the bulk: unknown
        b"not json at all",
        b"",
    ):
        assert leading_id(head) is None, head


@pytest.mark.parametrize(
    ("stdin", "stdout", "said"),
    [
        ("devnull", "pipe", "stdin is not a pipe, socket or terminal"),
        ("pipe", "file", "stdout is a regular file"),
    ],
)
def test_stdio_that_cannot_carry_the_protocol_is_one_line_and_exit_2(
    tmp_path: Path, stdin: str, stdout: str, said: str
) -> None:
    """It exited 1 with nothing on stderr: asyncio refused the descriptor inside the loop
    and the traceback went to the log."""
    out = tmp_path / "out.txt"
    with out.open("wb") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "app", "acp"],
            stdin=subprocess.DEVNULL if stdin == "devnull" else subprocess.PIPE,
            stdout=fh if stdout == "file" else subprocess.PIPE,
            stderr=subprocess.PIPE,
            input=None,
            cwd=tmp_path,
            env=agent_env(PATH="/usr/bin:/bin", HOME=str(tmp_path)),
            check=False,
            timeout=WAIT_S,
        )
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("switchyard: acp speaks the Agent Client Protocol") and said in line


async def test_loading_an_open_session_from_another_repository_is_refused(tmp_path: Path) -> None:
    """session/load of an open session's id with another cwd returned that session, on its
    own repository, as if it were the other's (an audit found it)."""
    repo = make_repo(tmp_path / "one")
    other = make_repo(tmp_path / "two")
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    await c.request(1, "initialize", {"protocolVersion": 1})
    await c.request(2, "session/new", {"cwd": str(repo), "mcpServers": []})
    await c.read_until(lambda lines: any(m.get("id") == 2 for m in lines))
    session = c.reply(2)["result"]["sessionId"]
    load = {"sessionId": session, "mcpServers": []}
    await c.request(3, "session/load", {**load, "cwd": str(other)})
    await c.request(4, "session/load", {**load, "cwd": str(repo)})
    # a folder of its repository is another place too: the session's edits are kept to
    # the folder it was opened on
    await c.request(5, "session/load", {**load, "cwd": str(repo / "tests")})
    await c.read_until(lambda lines: {3, 4, 5} <= {m.get("id") for m in lines})
    refused = c.reply(3)["error"]
    assert refused["code"] == -32602 and f"is open on {repo}, not on {other}" in refused["message"]
    assert "result" in c.reply(4)  # its own repository: loaded
    elsewhere = c.reply(5)["error"]
    assert f"is open on {repo}, not on {repo / 'tests'}" in elsewhere["message"]
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0


async def test_a_deep_or_non_json_line_is_answered_and_the_agent_stays_up(tmp_path: Path) -> None:
    """A line nested 1,200 deep killed the input guard (a RecursionError): the agent
    answered nothing more and never exited. NaN was read, and the SDK echoed it onto
    stdout, which no strict client parses."""
    repo = make_repo(tmp_path)
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    await c.request(1, "initialize", {"protocolVersion": 1})
    deep = b'{"jsonrpc":"2.0","id":2,"method":"session/list","params":' + b"[" * 1200
    await c.write(deep + b"]" * 1200 + b"}")
    await c.write(
        b'{"jsonrpc":"2.0","id":3,"method":"session/list","params":'
        + b"[" * 200
        + b"]" * 200
        + b"}"
    )
    await c.write(
        b'{"jsonrpc":"2.0","id":4,"method":"initialize","params":{"protocolVersion":NaN}}'
    )
    await c.request(5, "initialize", {"protocolVersion": 1})
    await c.read_until(lambda lines: any(m.get("id") == 5 for m in lines))
    assert sorted(c.null_id_errors()) == [-32700, -32700]  # too deep to read; NaN
    assert c.reply(3)["error"]["code"] == -32600  # read, but deeper than any message
    assert c.reply(5)["result"]["protocolVersion"] == 1
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0


async def test_a_message_that_is_not_json_rpc_2_is_refused_not_served(tmp_path: Path) -> None:
    """``"jsonrpc": "1.0"`` or a number: the SDK never looks, and such a request was
    served as any other (an ACP audit). JSON-RPC 2.0 says the member "MUST be exactly
    "2.0"": Invalid Request, with the request's id, or null when it has none. A message
    without the member is served: Zed's Rust SDK sent none before v0.2.0-alpha.5 (a
    review), and README promises those releases."""
    repo = make_repo(tmp_path)
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    init = {"protocolVersion": 1}
    await c.write({"jsonrpc": "1.0", "id": 1, "method": "initialize", "params": init})
    await c.write({"id": 2, "method": "initialize", "params": init})
    await c.write({"jsonrpc": 2.0, "id": 3, "method": "initialize", "params": init})
    await c.write({"jsonrpc": "1.0", "method": "session/cancel", "params": {"sessionId": "s"}})
    await c.write({"jsonrpc": "1.0", "id": {"x": 1}, "method": "initialize", "params": init})
    await c.request(4, "initialize", init)
    await c.write(
        {
            "jsonrpc": "1.0",
            "id": 5,
            "method": "session/new",
            "params": {"cwd": str(repo), "mcpServers": []},
        }
    )
    await c.read_until(lambda lines: {1, 2, 3, 4, 5} <= {m.get("id") for m in lines})
    # refused before the SDK saw them: none was served (a result), nor even checked (the
    # session/new's cwd is fine: it would have opened a session)
    for rid, shown in ((1, '"1.0"'), (3, "2.0"), (5, '"1.0"')):
        error = c.reply(rid)["error"]
        assert error["code"] == -32600 and "result" not in c.reply(rid), rid
        assert error["data"]["details"] == f"jsonrpc must be exactly '2.0', not {shown}"
    # the notification and the request whose id is no id: answered with a null id
    assert sorted(c.null_id_errors()) == [-32600, -32600]
    assert c.reply(4)["result"]["protocolVersion"] == 1  # a 2.0 request is served
    assert c.reply(2)["result"]["protocolVersion"] == 1  # and one that names no version
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0


async def test_a_response_that_is_not_json_rpc_2_is_not_taken(tmp_path: Path) -> None:
    """The editor's answer to ``fs/read_text_file`` in "jsonrpc": "1.0": its text was
    taken as the unsaved buffer. Now the read failed (a response is never answered), and
    the file is read from disk, as when the editor cannot answer."""
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")  # no commit: the run stops before any model
    (repo / "parser.py").write_text("ON_DISK = 1\n")
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    fs = {"fs": {"readTextFile": True, "writeTextFile": False}}
    await c.request(1, "initialize", {"protocolVersion": 1, "clientCapabilities": fs})
    await c.request(2, "session/new", {"cwd": str(repo), "mcpServers": []})
    await c.read_until(lambda lines: any(m.get("id") == 2 for m in lines))
    session = c.reply(2)["result"]["sessionId"]
    link = {"type": "resource_link", "name": "parser.py", "uri": (repo / "parser.py").as_uri()}
    task = [{"type": "text", "text": "fix the parser"}, link]
    await c.request(3, "session/prompt", {"sessionId": session, "prompt": task})

    def asked(lines: list[dict[str, Any]]) -> bool:
        return any(m.get("method") == "fs/read_text_file" for m in lines)

    await c.read_until(asked)
    (read,) = [m for m in c.lines if m.get("method") == "fs/read_text_file"]
    assert read["params"]["path"] == str(repo / "parser.py")
    buffer = {"content": "FROM-A-1.0-RESPONSE"}
    await c.write({"jsonrpc": "1.0", "id": read["id"], "result": buffer})
    await c.read_until(lambda lines: any(m.get("id") == 3 for m in lines))
    assert c.reply(3)["result"]["stopReason"] == "end_turn"
    # the response was not answered (the agent's own request id is no request of ours)
    assert not [m for m in c.lines if "method" not in m and m.get("id") == read["id"]]
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    log = (Path(agent_env()["SWITCHYARD_DATA_DIR"]) / "logs" / "acp.log").read_text()
    assert "a malformed response, passed on as an error" in log
    assert f"fs/read_text_file {repo / 'parser.py'} failed" in log
    assert "not JSON-RPC 2.0" in log and "Traceback" not in log


def test_a_malformed_error_response_reaches_the_sdk_as_a_well_formed_one() -> None:
    """``"error": "denied"`` to the agent's permission request crashed the SDK's receive
    loop: the prompt was never answered, nor anything after it."""
    from app.acp.stdio import well_formed_response

    for bad in ("denied", {"code": "x"}, {"code": True, "message": "m"}, None, [1]):
        fixed = well_formed_response({"jsonrpc": "2.0", "id": 7, "error": bad})
        assert fixed["id"] == 7 and fixed["error"]["code"] == -32603
        assert isinstance(fixed["error"]["message"], str)
    good = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32000, "message": "no"}}
    assert well_formed_response(good) is good
    result = {"jsonrpc": "2.0", "id": 7, "result": {"outcome": {"outcome": "cancelled"}}}
    assert well_formed_response(result) is result
    # a result with "error": null beside it (some clients send both) stays a result
    both = {"jsonrpc": "2.0", "id": 7, "result": {"outcome": {"optionId": "y"}}, "error": None}
    assert well_formed_response(both) is both
    # a result beside an error that is not null is no answer (JSON-RPC 2.0 forbids both):
    # a grant with an error beside it was taken as the approval (an ACP audit)
    for err in ({"code": 1, "message": "x"}, "denied", 0):
        grant = {"outcome": {"outcome": "selected", "optionId": "y"}}
        fixed = well_formed_response({"jsonrpc": "2.0", "id": 7, "result": grant, "error": err})
        assert "result" not in fixed and fixed["error"]["code"] == -32603, fixed
        assert "both a result and an error" in fixed["error"]["message"]
    # not JSON-RPC 2.0: whatever it carries, the request it answers failed
    for version in ({"jsonrpc": "1.0"}, {"jsonrpc": 2}, {"jsonrpc": None}):
        fixed = well_formed_response({**version, "id": 7, "result": {"outcome": "x"}})
        assert fixed["jsonrpc"] == "2.0" and fixed["id"] == 7 and "result" not in fixed
        assert fixed["error"]["code"] == -32603 and "not JSON-RPC 2.0" in fixed["error"]["message"]
    # a response that names no version (an older Rust SDK's) is taken as it is
    silent = {"id": 7, "result": {"outcome": {"outcome": "cancelled"}}}
    assert well_formed_response(silent) is silent


async def test_meta_changes_no_param_and_a_malformed_cancel_is_dropped_quietly(
    tmp_path: Path,
) -> None:
    """The SDK merges ``params._meta`` into the handler's arguments over the validated
    params: a ``cwd`` there opened the session on another folder than the one named, and
    a member of another type (``client_info``, ``self``) was an internal error with a
    traceback in the log. A ``session/cancel`` that did not validate left the SDK's
    "unhandled error" traceback in the log (an ACP audit)."""
    repo = make_repo(tmp_path)
    other = make_repo(tmp_path / "elsewhere")
    proc = await spawn(cwd=repo)
    c = RawClient(proc)
    meta = {"client_info": "zed", "self": 1, "cwd": str(other), "session_id": ["x"]}
    await c.request(1, "initialize", {"protocolVersion": 1, "_meta": meta})
    await c.request(2, "session/new", {"cwd": str(repo), "mcpServers": [], "_meta": meta})
    await c.read_until(lambda lines: {1, 2} <= {m.get("id") for m in lines})
    assert c.reply(1)["result"]["agentInfo"]["name"] == "switchyard"
    session = c.reply(2)["result"]["sessionId"]
    await c.write({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": 5}})
    await c.write({"jsonrpc": "2.0", "method": "session/cancel", "params": None})
    await c.write({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": "x"}})
    # the session is the repository's named by cwd: loading it there is no refusal
    load = {"sessionId": session, "cwd": str(repo), "mcpServers": [], "_meta": meta}
    await c.request(3, "session/load", load)
    # a lone surrogate (a string cut inside an emoji pair) beside a _meta: the line made
    # again without it could not be encoded, and the agent hung up (a review)
    cut = {"sessionId": "nope", "prompt": [{"type": "text", "text": "\ud83d"}], "_meta": {}}
    await c.request(5, "session/prompt", cut)
    await c.request(4, "session/list", {"_meta": {"cwd": 7}})
    await c.read_until(lambda lines: {3, 4, 5} <= {m.get("id") for m in lines})
    assert "unknown session 'nope'" in c.reply(5)["error"]["message"]
    assert "result" in c.reply(3), c.reply(3)
    assert "result" in c.reply(4), c.reply(4)
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    log = (Path(agent_env()["SWITCHYARD_DATA_DIR"]) / "logs" / "acp.log").read_text()
    assert "Traceback" not in log and "Unhandled error" not in log, log
    assert log.count("dropped a malformed notification") == 2
