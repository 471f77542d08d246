"""The ACP session list: each session's title is its last run's task, one line, shown."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.acp import history


def test_a_title_is_one_line_with_its_control_characters_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's newline and ESC went into the editor's session list as they were."""
    run = SimpleNamespace(
        session="s1", task="fix\nthe \x1b[31mparser", finalized="2026-12-06", extra={}
    )
    monkeypatch.setattr(history, "manifests", lambda repo: [run])
    (info,) = history.session_infos(tmp_path)
    assert info.title is not None
    assert "\n" not in info.title and "\x1b" not in info.title
    assert info.title.startswith("fix") and info.title.endswith("parser")


def _run(session: str, within: str | None, finalized: str) -> SimpleNamespace:
    extra = {} if within is None else {"within": within}
    return SimpleNamespace(session=session, task=session, finalized=finalized, extra=extra)


def test_each_session_is_listed_on_its_folder_and_older_ones_in_every_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session is listed on the folder its last run was kept to; given a folder, only
    that folder's, and the sessions of runs sealed before runs recorded their folder
    (listed on the top, as they were, whatever folder asks: they may be any folder's)."""
    runs = [_run("top", "", "1"), _run("app", "app", "2"), _run("old", None, "3")]
    monkeypatch.setattr(history, "manifests", lambda repo: runs)

    def listed(within: str | None) -> list[tuple[str, str]]:
        return [(i.session_id, i.cwd) for i in history.session_infos(tmp_path, within)]

    top, app = str(tmp_path), str(tmp_path / "app")
    assert listed(None) == [("old", top), ("app", app), ("top", top)]
    assert listed("app") == [("old", top), ("app", app)]
    assert listed("") == [("old", top), ("top", top)]
    assert listed("lib") == [("old", top)]


class _Reached(Exception):
    pass


async def test_a_session_is_loaded_only_from_its_folder_while_that_folder_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its edits were kept to its folder: loaded from another, it came back kept to that
    one and shown as its session. But a session whose folder was since renamed or removed
    is not locked away: it opens on the folder asked from, kept to it."""
    from acp import RequestError

    from app.acp import agent as acp_agent
    from app.config import load_settings
    from app.policy import load_policy
    from tests.fakes.demo_repo import git

    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "src").mkdir()
    git(repo, "init", "-q")
    agent = acp_agent.SwitchyardAgent(
        load_settings(), load_policy().policy, local_only=True, repo=None
    )
    monkeypatch.setattr(acp_agent, "runs_of", lambda repo, sid: [_run(sid, "app", "1")])

    async def opened(*args: Any, **kwargs: Any) -> None:
        raise _Reached(kwargs["within"])

    monkeypatch.setattr(agent, "_open", opened)
    with pytest.raises(RequestError) as refused:
        await agent.load_session(cwd=str(repo / "src"), session_id="s1")
    assert refused.value.code == -32602 and "open it from that folder" in str(refused.value)
    with pytest.raises(_Reached, match=r"^app$"):
        await agent.load_session(cwd=str(repo / "app"), session_id="s1")
    (repo / "app").rmdir()  # the folder renamed away since
    with pytest.raises(_Reached, match=r"^src$"):
        await agent.load_session(cwd=str(repo / "src"), session_id="s1")
