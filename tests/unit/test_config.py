"""Settings: defaults < user config file (XDG) < SWITCHYARD_* environment < flags."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from app import paths
from app.cli.main import main
from app.config import Settings, load_settings
from app.errors import ConfigError
from app.resources import default_policy_path


def _config(tmp_path: Path, text: str | bytes) -> Path:
    """Write the user config file where conftest's XDG_CONFIG_HOME says it lives."""
    target = tmp_path / "config" / "switchyard" / "config.toml"
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text, encoding="utf-8")
    return target


def test_defaults() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.policy is None and s.local_only is None
    assert (s.approve, s.consensus, s.critic) == ("ask", False, False)
    assert s.approval_timeout_s == 60.0


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False)])
def test_local_only_from_env(value: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", value)
    assert load_settings().local_only is expected


@pytest.mark.parametrize("name", ["SPEC_KIT_CONSENSUS", "SWITCHYARD_CONSENSUS"])
def test_consensus_switch_from_env(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "true")
    s = load_settings()
    assert s.consensus is True and s.critic is False


@pytest.mark.parametrize("name", ["SPEC_KIT_CRITIC", "SWITCHYARD_CRITIC"])
def test_critic_switch_from_env(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "true")
    s = load_settings()
    assert s.critic is True and s.consensus is False


def test_config_file_lives_under_xdg_config_home(tmp_path: Path) -> None:
    assert paths.user_config_file() == tmp_path / "config" / "switchyard" / "config.toml"


def test_xdg_config_home_is_read_on_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """platformdirs must not cache: a second XDG_CONFIG_HOME in one process is honoured."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other"))
    assert paths.user_config_file() == tmp_path / "other" / "switchyard" / "config.toml"


def test_data_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().data_dir == tmp_path / "data"  # SWITCHYARD_DATA_DIR (conftest)
    monkeypatch.delenv("SWITCHYARD_DATA_DIR")
    assert load_settings().data_dir == tmp_path / "xdg-data" / "switchyard"


def test_user_config_file_is_read(tmp_path: Path) -> None:
    _config(
        tmp_path,
        'theme = "mono"\nlocal_only = true\napprove = "deny"\nconsensus = true\nn_threads = 4\n',
    )
    s = load_settings()
    assert (s.theme, s.local_only, s.approve, s.consensus, s.n_threads) == (
        "mono",
        True,
        "deny",
        True,
        4,
    )


def test_env_beats_file_and_flags_beat_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, 'approve = "deny"\npolicy = "/from/file.toml"\n')
    assert load_settings().approve == "deny"
    monkeypatch.setenv("SWITCHYARD_APPROVE", "allow")
    monkeypatch.setenv("SWITCHYARD_POLICY", "/from/env.toml")
    s = load_settings()
    assert (s.approve, s.policy) == ("allow", Path("/from/env.toml"))
    assert load_settings(policy=Path("/from/flag.toml")).policy == Path("/from/flag.toml")
    assert load_settings(policy=None).policy == Path("/from/env.toml")  # None = flag not given


def _one_line_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert "\n" not in message and message
    assert info.value.exit_code == 2
    return message


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_APPROVE", "maybe")
    message = _one_line_error()
    assert message.startswith("setting approve: Input should be 'ask', 'allow' or 'deny'")


def test_bad_spec_kit_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEC_KIT_CONSENSUS", "perhaps")
    assert "SPEC_KIT_CONSENSUS" in _one_line_error()


def test_out_of_range_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_N_THREADS", "0")
    assert "setting n_threads:" in _one_line_error()


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_timeout_that_is_no_number_is_named_as_such(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nan was "should be less than or equal to 3600", a bound it does not break
    monkeypatch.setenv("SWITCHYARD_APPROVAL_TIMEOUT_S", value)
    assert "approval_timeout_s: Input should be a finite number" in _one_line_error()


def test_bad_file_value_and_unknown_key(tmp_path: Path) -> None:
    target = _config(tmp_path, 'approve = "maybe"\ncolour = "blue"\n')
    message = _one_line_error()
    assert "setting approve:" in message and "setting colour:" in message
    assert str(target) in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # FILE:LINE:COL, as the policy says it (it was "(at line 1, column 9)")
        ("theme = \n", ":1:9: toml syntax: Invalid value"),
        ("a = 1\na = 2\n", ":2:6: toml syntax: Cannot overwrite a value: 'a' is set twice"),
        (b'theme = "\xff"\n', ": not UTF-8 text"),
    ],
    ids=["syntax", "duplicate", "not-utf8"],
)
def test_unreadable_config_file_is_a_config_error(
    content: str | bytes, expected: str, tmp_path: Path
) -> None:
    target = _config(tmp_path, content)
    message = _one_line_error()
    assert message.startswith(f"{target}{expected}")


def test_cli_turns_a_bad_setting_into_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_APPROVE", "maybe")
    assert main(["policy", "show"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("switchyard: setting approve:")


def test_cli_turns_a_broken_config_file_into_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _config(tmp_path, "theme = \n")
    assert main(["policy", "check"]) == 2
    _, err = capsys.readouterr()
    assert err.splitlines() == [f"switchyard: {target}:1:9: toml syntax: Invalid value"]


def test_cli_reads_the_policy_from_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "mine.toml"
    copy.write_text(default_policy_path().read_text(encoding="utf-8"), encoding="utf-8")
    _config(tmp_path, f"policy = {json.dumps(str(copy))}\n")
    assert main(["policy", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(copy)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d.write_text("a file"), "a file is in the way"),
        (lambda d: d.parent.joinpath("file").write_text("x"), "Not a directory"),
    ],
    ids=["the data dir is a file", "a file on its way"],
)
@pytest.mark.parametrize("command", [["audit", "verify"], ["budget"], ["audit", "export"]])
def test_a_data_dir_that_cannot_be_a_folder_is_exit_2_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make: Any,
    reason: str,
    command: list[str],
) -> None:
    """It was a FileExistsError / NotADirectoryError traceback (audit export blamed the
    standard output)."""
    data = tmp_path / "place" / "data"
    data.parent.mkdir()
    make(data)
    where = data if reason == "a file is in the way" else tmp_path / "place" / "file" / "data"
    monkeypatch.setenv("SWITCHYARD_DATA_DIR", str(where))
    assert main(command) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"switchyard: cannot use the folder {where}: {reason} (see data_dir)"
    ]


@pytest.mark.parametrize("variable", ["SWITCHYARD_CONSENSUS", "SPEC_KIT_CONSENSUS"])
def test_a_bad_value_names_the_variable_that_was_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str
) -> None:
    """A setting with two names was reported under its first (SPEC_KIT_CONSENSUS) whichever
    the user had set."""
    monkeypatch.setenv(variable, "notabool")
    assert main(["policy", "show"]) == 2
    assert capsys.readouterr().err.startswith(f"switchyard: setting {variable}: ")


async def test_a_standing_approval_says_where_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every headless approval line said "--approve allow", also for an allow standing in
    the environment or the config file, which no one typed for this command."""
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.router.approvals import ApprovalRequest

    async def reason(mode_said: tuple[Any, str]) -> str:
        req = ApprovalRequest(
            session="s",
            role="architect",
            model="m",
            provider="openai",
            est_cost_usd=0.1,
            budget_left_usd=1.0,
        )
        return (await decider_for(*mode_said).decide(req)).reason

    assert approve_setting(load_settings(), "deny") == ("deny", "--approve deny")
    config = _config(tmp_path, 'approve = "allow"\n')
    said = approve_setting(load_settings(), None)
    assert said == ("allow", f'approve = "allow" in {config}')
    assert await reason(said) == f'approve = "allow" in {config}'
    monkeypatch.setenv("SWITCHYARD_APPROVE", "deny")
    said = approve_setting(load_settings(), None)
    assert said == ("deny", "SWITCHYARD_APPROVE=deny") and await reason(said) == said[1]
    assert await reason(approve_setting(load_settings(), "allow")) == "--approve allow"


@pytest.mark.parametrize("command", [["tui"], ["demo"], ["serve", "--tui", "--port", "0"]])
def test_the_workbench_faces_say_the_same_of_such_a_data_dir(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """tui, demo and serve --tui ended in a NotADirectoryError traceback (the log folder,
    the demo's copy) where budget said what was wrong."""
    (tmp_path / "file").write_text("x")
    where = tmp_path / "file" / "data"
    monkeypatch.setenv("SWITCHYARD_DATA_DIR", str(where))
    assert main(command) == 2
    err = capsys.readouterr().err
    (line,) = err.splitlines()
    assert line.startswith(f"switchyard: cannot use the folder {where}")
    assert line.endswith(": Not a directory (see data_dir)")


# ── empty variables, the data dir's permissions ─────────────────────────────────────────


def test_an_empty_variable_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`SWITCHYARD_DATA_DIR=` was Path(""): the current folder held the ledger."""
    from app.config import approve_setting

    for name in ("SWITCHYARD_DATA_DIR", "SWITCHYARD_POLICY", "SWITCHYARD_APPROVE"):
        monkeypatch.setenv(name, "")
    s = load_settings()
    assert s.data_dir == tmp_path / "xdg-data" / "switchyard"
    assert s.policy is None
    assert approve_setting(s, None) == ("ask", "the default")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_empty_data_dir_variable_leaves_the_current_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    here = tmp_path / "p"
    here.mkdir()
    here.chmod(0o755)
    monkeypatch.chdir(here)
    monkeypatch.setenv("SWITCHYARD_DATA_DIR", "")
    assert main(["budget", "--json"]) == 0
    assert list(here.iterdir()) == []
    assert stat.S_IMODE(here.stat().st_mode) == 0o755
    assert (tmp_path / "xdg-data" / "switchyard" / "ledger.sqlite3").is_file()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o755, 0o555, 0o750], ids=oct)
def test_a_data_dir_that_is_already_there_keeps_its_permissions(
    tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ensure_dir chmodded the folder to 0700, the user's own one included."""
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(mode)
    try:
        assert paths.ensure_dir(mine) == mine
        assert stat.S_IMODE(mine.stat().st_mode) == mode
    finally:
        mine.chmod(0o700)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_data_dir_switchyard_makes_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        made = paths.ensure_dir(tmp_path / "a" / "b" / "data")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o755  # as mkdir -p makes them


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data_dir = 5\n", "setting data_dir: must be a path as a string, not a number"),
        ('data_dir = ""\n', "setting data_dir: must not be empty: leave it out for the default"),
        ('policy = ""\n', "setting policy: must not be empty: leave it out for the default"),
    ],
    ids=["number", "empty", "empty-policy"],
)
def test_a_path_setting_that_is_no_path_names_the_file_line_and_field(
    text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "Input is not a valid path for <class 'pathlib.Path'>" and no line."""
    monkeypatch.delenv("SWITCHYARD_DATA_DIR")
    target = _config(tmp_path, "# mine\n\n" + text)
    message = _one_line_error()
    assert message == f"{expected} (from {target}:3)"


# ── where a bad value came from ──────────────────────────────────────────────────────────


def test_a_bad_value_names_its_source_not_env_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message ended "(env SWITCHYARD_* or FILE)", whichever had said it."""
    target = _config(tmp_path, 'theme = "mono"\nn_threads = 0\ncolour = "blue"\n')
    assert _one_line_error() == (
        f"setting n_threads: Input should be greater than or equal to 1 (from {target}:2); "
        f"setting colour: Extra inputs are not permitted (from {target}:3)"
    )
    monkeypatch.setenv("SWITCHYARD_N_THREADS", "300")
    message = _one_line_error()
    assert message.startswith(
        "setting n_threads: Input should be less than or equal to 256 (from SWITCHYARD_N_THREADS);"
    )
    monkeypatch.setenv("SPEC_KIT_CRITIC", "perhaps")
    assert "(from SPEC_KIT_CRITIC)" in _one_line_error()


def test_a_config_file_that_is_a_folder_is_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was skipped without a word."""
    folder = tmp_path / "config" / "switchyard" / "config.toml"
    folder.mkdir(parents=True)
    assert main(["policy", "show"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"switchyard: {folder}: a folder, not a config file (remove it or put TOML there)"
    ]


# ── the policy path, the runtime URLs ────────────────────────────────────────────────────


@pytest.mark.parametrize("what", ["missing", "folder"])
@pytest.mark.parametrize("where", ["env", "file", "flag"])
def test_a_policy_path_that_cannot_be_read_says_where_it_came_from(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    what: str,
    where: str,
) -> None:
    """`SWITCHYARD_POLICY= policy show` said ".: cannot read policy: is a directory" and
    never named the variable."""
    bad = tmp_path / "nope.toml" if what == "missing" else tmp_path
    argv = ["policy", "show"]
    if where == "env":
        monkeypatch.setenv("SWITCHYARD_POLICY", str(bad))
        source = "SWITCHYARD_POLICY"
    elif where == "file":
        target = _config(tmp_path, 'theme = "mono"\npolicy = ' + json.dumps(str(bad)) + "\n")
        source = f"{target}:2"
    else:
        argv += ["--policy", str(bad)]
        source = "--policy"
    assert main(argv) == 2
    reason = "no such file" if what == "missing" else "is a directory"
    assert capsys.readouterr().err.splitlines() == [
        f"switchyard: {bad}: cannot read policy: {reason} (the path is from {source})"
    ]


@pytest.mark.parametrize(
    ("value", "port"),
    [
        ("http://127.0.0.1:99999/v1", "99999"),
        ("http://h/v1,http://[::1]:0", "0"),
        ("http://u:S3cret@h:70000/", "70000"),
    ],
)
def test_a_runtime_url_whose_port_is_out_of_range_says_so(
    value: str, port: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``:99999`` was "must be an http:// or https:// URL with a host": it has both."""
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", value)
    assert main(["local", "status", "--json"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"switchyard: setting vllm_url: port {port} is not a port number (1-65535) "
        "(from SWITCHYARD_VLLM_URL)"
    )  # the port alone: the URL may hold a password


@pytest.mark.parametrize(
    "value",
    [
        "notaurl",
        "ftp://127.0.0.1/v1",
        "http://",
        "http://h:port/v1",
        "http://h:²/v1",  # a digit to isdigit(), not to int()
        "http://h/v1,nope",
        ",",
    ],
)
@pytest.mark.parametrize("variable", ["SWITCHYARD_VLLM_URL", "SWITCHYARD_LLAMACPP_SERVER_URL"])
def test_a_runtime_url_that_is_no_http_url_is_exit_2_naming_the_variable(
    value: str, variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`SWITCHYARD_VLLM_URL=notaurl` was taken; local status said "UnsupportedProtocol"."""
    monkeypatch.setenv(variable, value)
    assert main(["local", "status", "--json"]) == 2
    out, err = capsys.readouterr()
    field = variable.removeprefix("SWITCHYARD_").lower()
    assert out == ""
    assert err.splitlines() == [
        f"switchyard: setting {field}: must be an http:// or https:// URL with a host, such as "
        f"http://127.0.0.1:8000/v1, or several separated by commas (from {variable})"
    ]


@pytest.mark.parametrize(
    "value",
    ["http://127.0.0.1:8000/v1", "https://gpu-box.example/v1", "http://a:1/v1, http://b/v1"],
)
def test_http_runtime_urls_are_taken(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", value)
    assert load_settings().vllm_url == value


@pytest.mark.parametrize("field", ["user", "team"])
@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("ev\x1b[2J\x1b[31mil", "no newline, tab, zero-width or other control character"),
        ("ali\nfake@line", "no newline, tab, zero-width or other control character"),
        ("\x9bbad", "no newline, tab, zero-width or other control character"),
        ("platform\u200b", "zero-width"),
        ("ali\u202ece", "zero-width"),
        (" platform", "must not start or end with a space"),
        ("platform ", "must not start or end with a space"),
    ],
)
def test_a_user_or_team_name_others_read_is_printable_and_trimmed(
    field: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newline in a user name forged a row in others' ``audit tail --team``, an escape
    repainted their terminal, and " platform" was a team with a day cap of its own."""
    monkeypatch.setenv(f"SWITCHYARD_{field.upper()}", value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert exc.value.exit_code == 2
    assert f"setting {field}: " in str(exc.value) and said in str(exc.value)
    monkeypatch.setenv(f"SWITCHYARD_{field.upper()}", "Ana María (platform)")
    assert getattr(load_settings(), field) == "Ana María (platform)"


def test_an_os_user_name_unfit_for_a_name_is_cleaned_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default comes from $USER: refused, it failed every command, blaming a config
    file that did not exist (a review)."""
    monkeypatch.delenv("SWITCHYARD_USER", raising=False)
    monkeypatch.setenv("USER", "ev\x1b[2Jil ")
    monkeypatch.setenv("LOGNAME", "ev\x1b[2Jil ")
    assert load_settings().user == "ev[2Jil"


def test_a_data_dir_with_a_tilde_is_the_home_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data_dir = "~/sw-data"`` made a folder named ``~`` in each folder a command ran
    in: a ledger and an audit chain per folder, the caps held per folder (an audit)."""
    monkeypatch.delenv("SWITCHYARD_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _config(tmp_path, 'data_dir = "~/sw-data"\n')
    assert load_settings().data_dir == tmp_path / "home" / "sw-data"


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_relative_data_dir_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.delenv("SWITCHYARD_DATA_DIR", raising=False)
    if where == "env":
        monkeypatch.setenv("SWITCHYARD_DATA_DIR", "rel/data")
    else:
        _config(tmp_path, 'data_dir = "rel/data"\n')
    assert "data_dir: must be an absolute path (or begin with ~)" in _one_line_error()


@pytest.mark.parametrize("case", ["dangling link", "name too long"])
def test_a_data_dir_no_folder_can_be_made_at_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """A name past the file system's limit was an OSError traceback; a link to nowhere
    was "a file is in the way" (a chaos audit)."""
    if case == "dangling link":
        where = tmp_path / "data"
        where.symlink_to(tmp_path / "nowhere")
        reason = "a link to nowhere is in the way"
    else:
        where = tmp_path / ("d" * 300)
        reason = "File name too long"
    monkeypatch.setenv("SWITCHYARD_DATA_DIR", str(where))
    assert main(["budget"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"switchyard: cannot use the folder {where}: {reason} (see data_dir)"
    ]


def test_a_config_folder_that_cannot_be_entered_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``chmod 000 ~/.config/switchyard``: every command ended in a PermissionError's
    traceback (a user audit; root reads through it, so the refusal is made here)."""
    from app import config

    def refused(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(config.Path, "is_file", refused)
    with pytest.raises(config.ConfigError, match="cannot read config: Permission denied"):
        config._check_config_file(tmp_path / "switchyard" / "config.toml")
