"""``switchyard policy check|show`` and the parser around them: exit 0 or 2, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import __version__
from app.cli.main import build_parser, main
from app.policy import load_policy
from app.policy.loader import SEED_ROLES
from app.resources import default_policy_path

ROW_KEYS = {
    "role",
    "title",
    "kind",
    "default",
    "default_display",
    "alternatives",
    "provider",
    "locality",
    "runtimes",
    "fallback",
    "local_stand_in",
    "constraints",
    "triggers",
}


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich folds narrow tables; keep role ids whole


def _bad_policy(tmp_path: Path) -> Path:
    text = default_policy_path().read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("threshold = 0.75", "threshold = 1.5", 1), encoding="utf-8")
    return bad


def test_check_ok_prints_warnings_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check"]) == 0
    out, err = capsys.readouterr()
    path = default_policy_path()
    assert out.splitlines() == [
        f"{path}: ok — policy 1.0.0, 11 roles, 21 models, 21 triggers, 13 warnings"
    ]
    warnings = err.splitlines()
    assert len(warnings) == 13
    assert all(w.startswith(f"warning: {path}:") for w in warnings)
    assert "resolved contradiction C1" in warnings[0]


def test_check_quiet_and_explicit_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "--quiet", str(default_policy_path())]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert ": ok — policy 1.0.0" in out


def test_check_bad_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _bad_policy(tmp_path)
    assert main(["policy", "check", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = bad.read_text(encoding="utf-8").split("\n").index("threshold = 1.5") + 1
    assert err.splitlines() == [
        f"switchyard: {bad}:{line}: triggers[architect_low_confidence].threshold: "
        "1.5 is out of range 0..1"
    ]


def test_check_json_prints_the_findings_whether_the_file_loads_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI step reads one object: the errors with exit 2, the warnings with exit 0."""
    bad = _bad_policy(tmp_path)
    assert main(["policy", "check", str(bad), "--json"]) == 2
    out, err = capsys.readouterr()
    line = bad.read_text(encoding="utf-8").split("\n").index("threshold = 1.5") + 1
    assert json.loads(out) == {
        "ok": False,
        "path": str(bad),
        "errors": [
            f"{bad}:{line}: triggers[architect_low_confidence].threshold: 1.5 is out of range 0..1"
        ],
    }
    assert err == ""

    monkeypatch.setenv("SWITCHYARD_POLICY", str(tmp_path / "missing.toml"))
    assert main(["policy", "check", "--json"]) == 2  # the active policy, unreadable
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == str(tmp_path / "missing.toml") and data["ok"] is False
    assert "cannot read policy: no such file" in data["errors"][0]

    path = default_policy_path()
    assert main(["policy", "check", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["errors"], data["path"]) == (True, [], str(path))
    assert (data["roles"], data["models"], data["triggers"]) == (11, 21, 21)
    assert len(data["warnings"]) == 13 and "resolved contradiction C1" in data["warnings"][0]
    assert main(["policy", "check", str(path), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_a_key_pasted_where_its_variables_name_belongs_is_never_repeated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The finding quoted the value: the key went to stderr and --json of every command
    that read the policy (an audit)."""
    key = "sk-proj-PASTEDHERE0123456789abcdefXYZ"
    text = default_policy_path().read_text(encoding="utf-8")
    bad = tmp_path / "pasted.toml"
    bad.write_text(text.replace('api_key_env = "OPENAI_API_KEY"', f'api_key_env = "{key}"', 1))
    for argv in (["policy", "check", str(bad)], ["policy", "check", str(bad), "--json"]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert key not in out + err and "[REDACTED]" in out + err
        assert "providers.openai.api_key_env: not an environment variable name" in out + err
    assert main(["budget", "--policy", str(bad)]) == 2
    assert key not in capsys.readouterr().err


def test_show_bad_policy_from_env_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_POLICY", str(_bad_policy(tmp_path)))
    assert main(["policy", "show"]) == 2
    assert main(["policy", "check"]) == 2
    _, err = capsys.readouterr()
    assert err.count("triggers[architect_low_confidence].threshold") == 2 and "Traceback" not in err


def test_show_lists_all_ten_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "show"]) == 0
    out = capsys.readouterr().out
    policy = load_policy().policy
    for rid in SEED_ROLES:
        assert rid in out
        assert policy.roles[rid].title.split(" ")[0] in out
    assert "qwen3-14b" in out and "qwen2.5-coder-32b" in out and "deepseek-reasoner" in out
    assert "local_only = false" in out


def test_show_says_the_local_only_this_machine_runs_under(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SWITCHYARD_LOCAL_ONLY=true: every command ran local_only, `policy show` said false."""
    monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", "true")
    assert main(["policy", "show", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["local_only"] is True and data["policy_local_only"] is False


def test_show_json_is_stable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "show", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    keys = {"policy_version", "path", "local_only", "policy_local_only", "roles", "budget"}
    assert set(data) == {*keys, "tiers"}
    assert data["policy_version"] == "1.0.0"
    assert data["path"] == str(default_policy_path())
    assert data["local_only"] is False and data["policy_local_only"] is False
    assert [r["role"] for r in data["roles"]] == [*SEED_ROLES, "second_opinion"]
    assert all(set(r) == ROW_KEYS for r in data["roles"])
    rows = {r["role"]: r for r in data["roles"]}
    assert rows["architect"]["default"] == "qwen3-14b"
    assert rows["architect"]["fallback"] == ["gpt-5.1-high", "deepseek-reasoner"]
    assert rows["implementer"]["fallback"][0] == "deepseek-reasoner"
    assert rows["librarian"]["fallback"][0] == "kimi-k2-instruct"
    assert rows["judge"]["default"] == "gpt-5.1-high" and rows["judge"]["locality"] == "cloud"
    assert rows["stage0"]["default"] is None
    assert set(data["budget"]) >= {"session_usd", "day_usd", "provider_day_usd"}
    assert data["tiers"]["fast_local"] == ["qwen3-14b", "qwen2.5-coder-32b"]


def test_show_policy_flag_beats_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_POLICY", str(_bad_policy(tmp_path)))
    assert main(["policy", "show", "--json", "--policy", str(default_policy_path())]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(default_policy_path())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"switchyard {__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: switchyard" in capsys.readouterr().out


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(build_parser())


def test_policy_commands_are_registered() -> None:
    assert {("policy",), ("policy", "check"), ("policy", "show")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "switchyard")
def test_help_on_every_command(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: switchyard") and err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["--frobnicate"],
        ["policy"],
        ["policy", "frobnicate"],
        ["policy", "check", "--frobnicate"],
        ["policy", "check", "a.toml", "b.toml"],
        ["policy", "show", "--json", "extra"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "switchyard" in err and "usage error:" in err and "Traceback" not in err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_installed_script_runs() -> None:
    script = Path(sys.executable).parent / "switchyard"
    done = _run(str(script), "policy", "check")
    assert done.returncode == 0, done.stderr
    assert "ok — policy 1.0.0, 11 roles" in done.stdout
    assert done.stderr.count("warning: ") == 13


def test_python_dash_m_app() -> None:
    done = _run(sys.executable, "-m", "app", "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"switchyard {__version__}")


def test_installed_script_bad_policy_exit_2(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "switchyard"
    done = _run(str(script), "policy", "check", str(_bad_policy(tmp_path)))
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "triggers[architect_low_confidence].threshold: 1.5 is out of range 0..1"
    )
    assert len(done.stderr.splitlines()) == 1
