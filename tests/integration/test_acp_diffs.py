"""What an editor is shown of a run's change is what lands, byte for byte (an ACP audit).

The ACP diff content of an attempt had lost every CR of a CRLF file and added a final
newline the commit did not hold: the new text was rebuilt from ``git diff`` read as text.
Here, in real repositories, the change is committed in a run's worktree and the diff is
the worktree's own (:meth:`Worktree.diff`); each file's old text must be its bytes at the
base, and its new text its bytes at the attempt's commit. A binary or non-UTF-8 file
cannot be shown as text, and is said to be one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.acp.auditview import UsageMeter
from app.acp.diffs import Content, attempt_contents
from app.acp.relay import RunRelay
from app.bus import Bus, DiffUpdated
from app.config import load_settings
from app.pipeline.runner import RunOptions, run_pipeline
from app.policy import load_policy
from app.resources import default_policy_path
from app.router.session import open_session
from app.workspace.worktree import Worktree
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.test_workspace_repo import git, make_repo
from tests.reliability import kit

BASE = {
    "crlf.txt": b"line1\r\nline2\r\nline3\r\n",
    "gains_newline.py": b"def f(a, b):\n    return a - b",
    "loses_newline.py": b"def g():\n    return 1\n",
    "lone_cr.txt": b"one\rtwo\nthree\n",
    "gone.txt": b"bye\r\n",
    "old_name.txt": b"ren\r\nsame\r\nsame2\r\nsame3\r\n",
    "café.txt": "é\n".encode(),
}
CHANGE: dict[str, bytes | None] = {
    "crlf.txt": b"line1\r\nLINE2\r\nline3\r\n",
    "gains_newline.py": b"def f(a, b):\n    return a + b\n",
    "loses_newline.py": b"def g():\n    return 2",
    "lone_cr.txt": b"one\rTWO\nthree\n",
    "gone.txt": None,
    "old_name.txt": None,
    "new_name.txt": b"ren\r\nsame\r\nsame2\r\nsame3\r\nmore\r\n",
    "added.txt": b"new\r\n",
    "café.txt": "è\n".encode(),
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def base_of(repo: Path, files: dict[str, bytes]) -> None:
    """Commit ``files`` as they are, bytes, on the repository's HEAD."""
    for name, data in files.items():
        (repo / name).write_bytes(data)
    git(repo, "add", "--", *files)
    git(repo, "commit", "-q", "-m", "base")


def attempt(repo: Path, change: dict[str, bytes | None]) -> Worktree:
    """A run's worktree holding ``change`` (None: the file deleted) as one commit."""
    wt = Worktree.create(repo, "run-1")
    for name, data in change.items():
        if data is None:
            (wt.path / name).unlink()
        else:
            (wt.path / name).write_bytes(data)
    git(wt.path, "add", "-A")
    git(wt.path, "commit", "-q", "-m", "attempt 1")
    return wt


def shown(repo: Path, wt: Worktree) -> dict[str, Content]:
    """Each file's content as the relay sends it, by path."""
    contents, locations = attempt_contents(wt.diff(), repo, wt.base, wt.head())
    assert len(contents) == len(locations)
    return {loc.path: c for loc, c in zip(locations, contents, strict=True)}


def texts(content: Content) -> tuple[str | None, str]:
    assert content.type == "diff", content
    return content.old_text, content.new_text


def test_each_file_is_shown_as_its_bytes_at_the_base_and_at_the_commit(repo: Path) -> None:
    base_of(repo, BASE)
    wt = attempt(repo, CHANGE)
    got = {path: texts(c) for path, c in shown(repo, wt).items()}
    assert got == {
        str(repo / "crlf.txt"): ("line1\r\nline2\r\nline3\r\n", "line1\r\nLINE2\r\nline3\r\n"),
        str(repo / "gains_newline.py"): (
            "def f(a, b):\n    return a - b",
            "def f(a, b):\n    return a + b\n",
        ),
        str(repo / "loses_newline.py"): ("def g():\n    return 1\n", "def g():\n    return 2"),
        str(repo / "lone_cr.txt"): ("one\rtwo\nthree\n", "one\rTWO\nthree\n"),
        str(repo / "gone.txt"): ("bye\r\n", ""),  # deleted: nothing on the new side
        str(repo / "new_name.txt"): (  # renamed: the old name's text, the new name's
            "ren\r\nsame\r\nsame2\r\nsame3\r\n",
            "ren\r\nsame\r\nsame2\r\nsame3\r\nmore\r\n",
        ),
        str(repo / "added.txt"): (None, "new\r\n"),  # added: no old text
        # git quotes a non-ASCII name in the diff ("b/caf\303\251.txt"): shown by its name
        str(repo / "café.txt"): ("é\n", "è\n"),
    }


def test_a_repository_that_diffs_without_prefixes_still_names_its_files(repo: Path) -> None:
    """Under ``diff.noprefix`` a file in a folder named ``a`` lost that folder as if it
    were git's own ``a/`` prefix."""
    git(repo, "config", "diff.noprefix", "true")
    (repo / "a").mkdir()
    base_of(repo, {"a/notes.txt": b"one\n"})
    wt = attempt(repo, {"a/notes.txt": b"two\n"})
    assert {p: texts(c) for p, c in shown(repo, wt).items()} == {
        str(repo / "a" / "notes.txt"): ("one\n", "two\n")
    }


def test_a_binary_or_non_utf8_file_is_said_to_be_one_not_shown(repo: Path) -> None:
    base_of(
        repo,
        {"latin1.txt": b"caf\xe9\n", "blob.bin": b"a\0b\n", "turns.txt": b"fine\n"},
    )
    wt = attempt(
        repo,
        {"latin1.txt": b"caf\xe9s\n", "blob.bin": b"a\0c\n", "turns.txt": b"fine\xff\n"},
    )
    got = shown(repo, wt)
    notes = {Path(path).name: c.content.text for path, c in got.items() if c.type == "content"}
    assert notes == {
        "latin1.txt": "latin1.txt: not UTF-8 text; its change is not shown",
        "blob.bin": "blob.bin: a binary file; its change is not shown as text",
        "turns.txt": "turns.txt: not UTF-8 text; its change is not shown",
    }


async def test_the_relay_reads_the_new_text_at_the_attempts_commit(repo: Path, policy: Any) -> None:
    base_of(repo, {"crlf.txt": BASE["crlf.txt"], "gains_newline.py": BASE["gains_newline.py"]})
    wt = attempt(
        repo,
        {"crlf.txt": CHANGE["crlf.txt"], "gains_newline.py": CHANGE["gains_newline.py"]},
    )
    sent: list[Any] = []

    async def send(update: Any) -> None:
        sent.append(update)

    relay = RunRelay(send, repo, wt.base, UsageMeter(policy))
    await relay.handle(
        DiffUpdated(session="s", run="r", attempt=1, diff=wt.diff(), commit=wt.head())
    )
    (update,) = [u for u in sent if u.content and u.content[0].type == "diff"]
    assert [(c.path, c.old_text, c.new_text) for c in update.content] == [
        (str(repo / "crlf.txt"), "line1\r\nline2\r\nline3\r\n", "line1\r\nLINE2\r\nline3\r\n"),
        (
            str(repo / "gains_newline.py"),
            "def f(a, b):\n    return a - b",
            "def f(a, b):\n    return a + b\n",
        ),
    ]


async def test_a_runs_diff_event_names_the_commit_that_holds_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> None:
    """The pipeline's own events: the editor's new text is read at ``commit``, so the
    commit must hold exactly the diff the event carries."""
    repo = kit.make_repo(tmp_path)
    fix = kit.fix_diff(repo)

    def local(body: dict[str, Any]) -> str:
        role = kit.role_of(body)
        if role == "architect":
            return kit.plan_json(0.95)
        if role == "implementer":
            return kit.impl_json(fix)
        if role == "judge":
            return kit.verdict_json()
        return json.dumps({"patterns": []})

    vllm = fake_openai_factory("vllm", models=kit.LOCAL_MODELS)
    vllm.script.respond_with(local)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{kit.closed_port()}/v1")
    base = kit.git(repo, "rev-parse", "HEAD").strip()
    bus = Bus()
    with bus.subscribe(kinds=(DiffUpdated,), maxsize=1000) as sub:
        policy = load_policy(default_policy_path()).policy
        async with open_session(
            load_settings(), policy, approve="deny", bus=bus, local_only=True
        ) as session:
            options = RunOptions(repo=repo, test_command=kit.FAST_TEST)
            await run_pipeline(session, kit.TASK, options)
        events = [e for e in sub.drain() if isinstance(e, DiffUpdated)]
    assert events
    for event in events:
        assert event.commit is not None
        assert kit.git(repo, "diff", base, event.commit) == event.diff
        (content,), _ = attempt_contents(event.diff, repo, base, event.commit)
        assert content.type == "diff"
        assert content.new_text == kit.git(repo, "show", f"{event.commit}:parser.py")
