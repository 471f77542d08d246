"""``switchyard policy simulate`` and ``policy diff`` end to end.

The audit log is written by real sessions (``switchyard ask``, one session each) against
loopback fakes of vLLM, OpenAI, DeepSeek and Moonshot, with scripted triggers: low
confidence, failed loops, long context, a denial. Then the log is replayed under changed
thresholds, chains and caps, and the counts and dollars are checked exactly: each
dollar figure below is the recorded token count times a list price of the policy.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import main
from app.config import load_settings
from app.resources import default_policy_path
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.reliability.kit import LOCAL_MODELS, audit_lines, closed_port, run_cli, run_json

#: the cloud fakes answer with this many words (one completion token each)
CLOUD_WORDS = 1000
LOCAL_WORDS = 400

#: (role, signals, approve): the session each ``ask`` opens, in order
ASKS: list[tuple[str, list[str], str]] = [
    ("architect", ["confidence=0.5"], "allow"),  # → gpt-5.1-high
    ("architect", ["confidence=0.78"], "allow"),  # local
    ("architect", ["confidence=0.9"], "allow"),  # local
    ("implementer", ["failed_loops=2"], "allow"),  # → deepseek-reasoner
    ("implementer", ["failed_loops=3"], "allow"),  # → deepseek-reasoner
    ("implementer", ["failed_loops=1"], "allow"),  # local
    ("librarian", ["context_estimate=120000"], "allow"),  # → kimi-k2-instruct
    ("librarian", ["context_estimate=80000"], "allow"),  # local (condensed)
    ("architect", ["confidence=0.6"], "deny"),  # asked twice, denied twice, local
]


def edited(tmp_path: Path, name: str, base: Path, *swaps: tuple[str, str]) -> Path:
    text = base.read_text(encoding="utf-8")
    for old, new in swaps:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


THRESHOLD_080 = (
    'threshold = 0.75\nseed = "§3 confidence <',
    'threshold = 0.8\nseed = "§3 confidence <',
)
OPUS_FIRST = (
    'fallback = ["gpt-5.1-high", "deepseek-r2"]',
    'fallback = ["claude-opus-4.7", "deepseek-r2"]',
)
KIMI_60K = ("threshold = 100000\n", "threshold = 60000\n")


def run_quiet(argv: list[str]) -> int:
    """``switchyard ARGV`` in-process, its output dropped (a module fixture has no capsys)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def ask_argv(policy: Path, role: str, signals: list[str], approve: str) -> list[str]:
    argv = ["ask", "--policy", str(policy), "--role", role, "--approve", approve]
    for sig in signals:
        argv += ["--signal", sig]
    return [*argv, "--max-tokens", "2000", "plan the fix"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The ASKS, run once for the module: the audit DB they wrote, and its lines."""
    tmp = tmp_path_factory.mktemp("recording")
    vllm = FakeOpenAIServer("vllm", models=LOCAL_MODELS, default_reply="ok " * LOCAL_WORDS)
    clouds = {
        name: FakeOpenAIServer(name, default_reply="word " * CLOUD_WORDS)
        for name in ("openai", "deepseek", "moonshot")
    }
    servers = [vllm.start(), *(s.start() for s in clouds.values())]
    policy = policy_pointing(tmp, **{n: s.base_url for n, s in clouds.items()})
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SWITCHYARD_DATA_DIR", str(tmp / "data"))
            mp.setenv("XDG_CONFIG_HOME", str(tmp / "config"))
            mp.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
            mp.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
            for name in ("OPENAI", "DEEPSEEK", "MOONSHOT"):
                mp.setenv(f"{name}_API_KEY", f"sk-sim-{name.lower()}-0000000000000000")
            for name in ("SWITCHYARD_POLICY", "SWITCHYARD_LOCAL_ONLY", "SWITCHYARD_APPROVE"):
                mp.delenv(name, raising=False)
            for role, signals, approve in ASKS:
                assert run_quiet(ask_argv(policy, role, signals, approve)) == 0, (role, signals)
            db = load_settings().audit_db
            lines = audit_lines()
        yield {"db": db, "lines": lines, "policy": policy}
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def recorded(recording: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """This test's data dir holds a copy of the recorded audit log."""
    target = load_settings().audit_db
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{recording['db']}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{target}{suffix}")
    return {**recording, "tmp": tmp_path}


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    """Live fakes for a test that writes its own log."""
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="ok " * LOCAL_WORDS)
    policy = policy_pointing(tmp_path)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    return {"policy": policy, "tmp": tmp_path}


def simulate(
    capsys: pytest.CaptureFixture[str], new: Path, against: Path, *extra: str
) -> dict[str, Any]:
    argv = ["policy", "simulate", "--policy", str(new), "--against", str(against), *extra]
    rc, data, err = run_json(argv, capsys)
    assert rc == 0, err
    assert isinstance(data, dict)
    return data


def calls(lines: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [a for a in lines if a["kind"] == "call" and a["role"] == role]


def first_decision(lines: list[dict[str, Any]], role: str, n: int) -> dict[str, Any]:
    """The first decision line of the ``n``-th request of ``role`` (0-based)."""
    firsts = [
        a
        for a in lines
        if a["role"] == role and "inputs" in a["values"] and a["values"]["inputs"]["step"] == 0
    ]
    return firsts[n]


def role_row(report: dict[str, Any], role: str) -> dict[str, Any]:
    return next(r for r in report["roles"] if r["role"] == role)


def usd(tokens_in: int, tokens_out: int, price_in: float, price_out: float) -> float:
    return round((tokens_in * price_in + tokens_out * price_out) / 1e6, 6)


def test_the_log_records_what_decide_read(recorded: dict[str, Any]) -> None:
    lines = recorded["lines"]
    decisions = [a for a in lines if a["kind"] in ("route", "runtime_fallback", "escalation")]
    assert decisions and all("inputs" in a["values"] for a in decisions)
    first = first_decision(lines, "architect", 0)
    inputs = first["values"]["inputs"]
    assert inputs["signals"]["confidence"] == 0.5
    assert inputs["v"] == 1 and inputs["step"] == 0
    assert set(inputs["left"]) == {"openai", "anthropic", "deepseek", "moonshot"}
    # the denied request decided three times: gpt-5.1-high, deepseek-reasoner, then local
    denied = [a for a in lines if a["session"] == lines[-1]["session"] and "inputs" in a["values"]]
    assert [a["values"]["inputs"]["step"] for a in denied] == [0, 1, 2]
    assert denied[2]["values"]["inputs"]["denied"] == ["deepseek-reasoner", "gpt-5.1-high"]
    assert {a["values"]["req"] for a in denied[1:]} == {denied[0]["seq"]}
    call = calls(lines, "architect")[0]
    assert call["values"]["req"] == first["seq"] and call["values"]["provider"] == "openai"


def test_a_policy_against_itself_changes_nothing(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = recorded["policy"]
    report = simulate(capsys, policy, policy)
    assert report["decisions"] == len(ASKS)
    assert report["changed"] == 0
    assert report["unsimulated"] == {"count": 0, "reasons": {}, "recorded_usd": 0.0}
    assert report["against_differs_from_recorded"] == 0
    # gpt-5.1-high 21 in / 1000 out, deepseek-reasoner twice 21 / 1006, kimi 21 / 1000
    total = (21 * 1.25 + 1000 * 10.0) + 2 * (21 * 0.28 + 1006 * 0.42) + (21 * 0.6 + 1000 * 2.5)
    assert total == pytest.approx(13395.65)
    assert report["cloud_usd_new"] == report["cloud_usd_against"] == 0.013396
    approvals = {r["role"]: (r["approvals_against"], r["approvals_new"]) for r in report["roles"]}
    assert approvals == {"architect": (3, 3), "implementer": (2, 2), "librarian": (1, 1)}
    assert report["blocked"] == [] and report["caps_reached"] == []


def test_a_higher_architect_threshold_adds_one_estimated_escalation(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = recorded["lines"]
    new = edited(recorded["tmp"], "new.toml", recorded["policy"], THRESHOLD_080)
    report = simulate(capsys, new, recorded["policy"])
    assert report["decisions"] == 9 and report["changed"] == 1
    row = role_row(report, "architect")
    assert (row["decisions"], row["changed"], row["escalations_added"]) == (4, 1, 1)
    assert (row["escalations_removed"], row["different_target"]) == (0, 0)
    # the 0.78 plan now asks too: 3 → 4 approvals
    assert (row["approvals_against"], row["approvals_new"]) == (3, 4)
    local = calls(lines, "architect")[1]  # the 0.78 request's local call
    assert local["to"] == "qwen3-14b@vllm"
    tokens = (local["values"]["tokens_in"], local["values"]["tokens_out"])
    assert tokens == (21, LOCAL_WORDS)
    gpt = usd(21, LOCAL_WORDS, 1.25, 10.0)
    assert gpt == 0.004026
    [change] = report["biggest_changes"]
    assert change["seq"] == first_decision(lines, "architect", 1)["seq"]
    assert change["kind"] == "escalation_added" and change["estimated"] is True
    assert change["against"] == "qwen3-14b@vllm (local)"
    assert change["new"] == "gpt-5.1-high (cloud)"
    assert change["new_usd"] == change["delta_usd"] == gpt
    assert change["reasons"] == ["ARCHITECT_LOW_CONFIDENCE"]
    openai = next(s for s in report["spend"] if s["provider"] == "openai")
    cloud = calls(lines, "architect")[0]["values"]
    recorded_gpt = usd(cloud["tokens_in"], cloud["tokens_out"], 1.25, 10.0)
    assert recorded_gpt == 0.010026
    assert openai["against_usd"] == recorded_gpt and openai["against_estimated_usd"] == 0
    assert openai["new_usd"] == 0.014053  # $0.01002625 + $0.00402625
    assert openai["new_estimated_usd"] == gpt


def test_a_different_chain_prices_the_recorded_tokens_at_the_new_target(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = recorded["lines"]
    new = edited(recorded["tmp"], "new.toml", recorded["policy"], OPUS_FIRST)
    report = simulate(capsys, new, recorded["policy"])
    row = role_row(report, "architect")
    # 0.5: gpt-5.1-high → claude-opus-4.7 on the same tokens; 0.6 (the human denied GPT and
    # DeepSeek, never asked about Opus): Opus is assumed to answer, priced on the local call
    assert (row["changed"], row["different_target"], row["escalations_added"]) == (2, 1, 1)
    cloud = calls(lines, "architect")[0]["values"]
    opus = usd(cloud["tokens_in"], cloud["tokens_out"], 5.0, 25.0)
    assert opus == 0.025105
    by_seq = {c["seq"]: c for c in report["biggest_changes"]}
    moved = by_seq[first_decision(lines, "architect", 0)["seq"]]
    assert moved["kind"] == "different_target" and moved["estimated"] is False
    assert (moved["against"], moved["new"]) == ("gpt-5.1-high (cloud)", "claude-opus-4.7 (cloud)")
    assert moved["new_usd"] == opus
    added = by_seq[first_decision(lines, "architect", 3)["seq"]]
    last_local = calls(lines, "architect")[-1]["values"]
    assert added["new_usd"] == usd(last_local["tokens_in"], last_local["tokens_out"], 5.0, 25.0)
    assert added["estimated"] is True
    # the two biggest changes come first, by dollars
    assert [c["seq"] for c in report["biggest_changes"]] == [moved["seq"], added["seq"]]


def test_kimi_at_60k_escalates_the_80k_sweep(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = recorded["lines"]
    new = edited(recorded["tmp"], "new.toml", recorded["policy"], KIMI_60K)
    report = simulate(capsys, new, recorded["policy"])
    assert report["changed"] == 1
    row = role_row(report, "librarian")
    assert (row["decisions"], row["escalations_added"]) == (2, 1)
    local = calls(lines, "librarian")[1]["values"]
    kimi = usd(local["tokens_in"], local["tokens_out"], 0.6, 2.5)
    [change] = report["biggest_changes"]
    assert change["new"] == "kimi-k2-instruct (cloud)" and change["new_usd"] == kimi
    assert kimi == 0.001013


def test_a_lower_deepseek_cap_blocks_the_second_escalation(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = recorded["lines"]
    first = calls(lines, "implementer")[0]["values"]
    spent = usd(first["tokens_in"], first["tokens_out"], 0.28, 0.42)
    assert spent == 0.000428
    # the reservation for an implementer escalation, as recorded: it covers the request's
    # own output cap (ask's --max-tokens 256 and the reasoner's thinking), no longer the
    # role's 8,192 tokens ($0.00344932 with a 31-token prompt)
    escalation = next(a for a in lines if a["kind"] == "escalation" and a["role"] == "implementer")
    est = escalation["values"]["est_cost_usd"]
    assert spent < est < (31 * 0.28 + 8192 * 0.42) / 1e6
    # room for the first estimate, not for the second once the first is spent
    cap = round(spent + est / 2, 6)
    assert est <= cap < spent + est
    new = edited(
        recorded["tmp"], "cap.toml", recorded["policy"], ("deepseek = 5.0\n", f"deepseek = {cap}\n")
    )
    report = simulate(capsys, new, recorded["policy"])
    second = first_decision(lines, "implementer", 1)["seq"]
    # and the last architect request's DeepSeek step (denied when recorded) after them
    denied = first_decision(lines, "architect", 3)["seq"]
    assert [(b["policy"], b["seq"], b["model"], b["cap"]) for b in report["blocked"]] == [
        ("new", second, "deepseek-reasoner", "provider:deepseek"),
        ("new", second, "deepseek-chat", "provider:deepseek"),
        ("new", denied, "deepseek-reasoner", "provider:deepseek"),
    ]
    assert report["blocked"][0]["then"] == "claude-sonnet-4.6 (cloud)"
    [cap] = report["caps_reached"]
    assert (cap["policy"], cap["cap"], cap["seq"], cap["blocked"]) == (
        "new",
        "provider:deepseek",
        second,
        2,
    )
    assert cap["limit_usd"] == round(spent + est / 2, 6)
    row = role_row(report, "implementer")
    assert (row["changed"], row["different_target"]) == (1, 1)
    second_call = calls(lines, "implementer")[1]["values"]
    sonnet = usd(second_call["tokens_in"], second_call["tokens_out"], 3.0, 15.0)
    assert sonnet == 0.015153
    spend = {(s["provider"]): s for s in report["spend"]}
    assert spend["anthropic"]["new_usd"] == sonnet and spend["anthropic"]["against_usd"] == 0
    assert spend["deepseek"]["new_usd"] == spent
    assert spend["deepseek"]["against_usd"] == 0.000857  # 2 × $0.0004284


def test_text_output_filters_and_an_empty_range(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    new = edited(recorded["tmp"], "new.toml", recorded["policy"], THRESHOLD_080)
    argv = ["policy", "simulate", "--policy", str(new), "--against", str(recorded["policy"])]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "9 decisions replayed, 1 changed: 1 escalation added" in out
    assert "qwen3-14b@vllm (local) → gpt-5.1-high (cloud)" in out
    assert "(estimated)" in out
    rc, out, err = run_cli([*argv, "--since", "2999-01-01"], capsys)
    assert rc == 0 and "no decisions in this range" in out
    session = recorded["lines"][-1]["session"]
    report = simulate(capsys, new, recorded["policy"], "--session", session)
    assert report["decisions"] == 1 and report["range"]["session"] == session
    rc, out, err = run_cli([*argv, "--since", "yesterday"], capsys)
    assert rc == 2 and "--since 'yesterday'" in err
    # a bare --until date runs to that day's end: a time that day is not after it
    rc, out, err = run_cli([*argv, "--since", "2999-01-01T10:00", "--until", "2999-01-01"], capsys)
    assert rc == 0 and "no decisions in this range" in out, err
    rc, out, err = run_cli([*argv, "--since", "2999-01-02", "--until", "2999-01-01"], capsys)
    assert rc == 2 and "--until 2999-01-01 is before --since 2999-01-02" in err
    rc, out, err = run_cli(
        [*argv, "--since", "2999-01-01T10:00", "--until", "2999-01-01T09:00"], capsys
    )
    assert rc == 2 and "is before --since" in err


def test_an_invalid_policy_exits_2_with_file_and_line(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = edited(
        recorded["tmp"],
        "bad.toml",
        recorded["policy"],
        (THRESHOLD_080[0], THRESHOLD_080[0].replace("0.75\n", "7.5\n")),
    )
    rc, out, err = run_cli(
        ["policy", "simulate", "--policy", str(bad), "--against", str(recorded["policy"])], capsys
    )
    assert rc == 2 and out == ""
    line = bad.read_text().splitlines().index("threshold = 7.5") + 1
    assert f"{bad}:{line}: triggers[architect_low_confidence].threshold" in err
    rc, _, err = run_cli(["policy", "diff", str(bad), str(recorded["policy"])], capsys)
    assert rc == 2 and f"{bad}:{line}:" in err


def test_a_broken_chain_exits_1_with_the_first_bad_seq(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite3.connect(load_settings().audit_db)
    db.execute("DROP TRIGGER audit_lines_no_update")
    db.execute("UPDATE audit_lines SET line = replace(line, '0.78', '0.99') WHERE seq = 4")
    db.commit()
    db.close()
    policy = str(recorded["policy"])
    rc, out, err = run_cli(["policy", "simulate", "--policy", policy, "--against", policy], capsys)
    assert rc == 1 and out == ""
    assert "does not verify at line 4" in err and "Traceback" not in err


def test_lines_from_before_the_record_are_counted_unsimulated(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An old log: a route and its call as the router wrote them before inputs were
    recorded, then one request of today's."""
    import asyncio

    from app.audit.log import AuditLog

    async def old() -> None:
        async with AuditLog.open(load_settings().audit_db) as log:
            await log.append("route", session="old", role="architect", to="qwen3-14b@vllm")
            await log.append(
                "call",
                session="old",
                role="architect",
                to="gpt-5.1-high",
                values={"tokens_in": 10, "tokens_out": 10, "cost_usd": 0.5},
            )

    asyncio.run(old())
    rc, _, err = run_json(ask_argv(world["policy"], "tutor", [], "deny"), capsys)
    assert rc == 0, err
    policy = world["policy"]
    report = simulate(capsys, policy, policy)
    assert report["decisions"] == 1
    assert report["unsimulated"] == {
        "count": 1,
        "reasons": {"written before decisions recorded their inputs": 1},
        "recorded_usd": 0.5,
    }


def test_policy_diff_names_thresholds_chains_caps_and_prices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = default_policy_path()
    new = edited(
        tmp_path,
        "b.toml",
        base,
        THRESHOLD_080,
        OPUS_FIRST,
        ("deepseek = 5.0\n", "deepseek = 1.0\n"),
        ("price_in_usd_per_mtok = 5.0\n", "price_in_usd_per_mtok = 4.0\n"),
    )
    rc, data, err = run_json(["policy", "diff", str(base), str(new)], capsys)
    assert rc == 0, err
    got = [(e["category"], e["path"], e["old"], e["new"]) for e in data["entries"]]
    assert ("thresholds", "triggers.architect_low_confidence.threshold", 0.75, 0.8) in got
    assert ("caps", "budget.provider_day_usd.deepseek", 5.0, 1.0) in got
    assert (
        "chains",
        "roles.architect.fallback",
        ["gpt-5.1-high", "deepseek-reasoner"],
        ["claude-opus-4.7", "deepseek-reasoner"],
    ) in got
    prices = [g for g in got if g[0] == "prices"]
    assert prices == [("prices", "models.claude-opus-4.7.price_in_usd_per_mtok", 5.0, 4.0)]
    assert {g[0] for g in got} == {"thresholds", "chains", "caps", "prices"}
    rc, out, _ = run_cli(["policy", "diff", str(base), str(new)], capsys)
    assert rc == 0 and "triggers.architect_low_confidence.threshold: 0.75 → 0.8" in out
    # a chain is bracketed: its own arrows stand apart from the old → new one
    assert (
        "roles.architect.fallback: [gpt-5.1-high → deepseek-reasoner] → "
        "[claude-opus-4.7 → deepseek-reasoner]"
    ) in " ".join(out.split())
    rc, data, _ = run_json(["policy", "diff", str(base), str(base)], capsys)
    assert rc == 0 and data["same"] is True and data["entries"] == []
    # --exit-code: 1 when they differ (CI holds a change to the policy's meaning), else 0
    rc, data, _ = run_json(["policy", "diff", str(base), str(new), "--exit-code"], capsys)
    assert rc == 1 and data["same"] is False
    rc, out, _ = run_cli(["policy", "diff", str(base), str(new), "--exit-code"], capsys)
    assert rc == 1 and "0.75 → 0.8" in out
    rc, out, _ = run_cli(["policy", "diff", str(base), str(base), "--exit-code"], capsys)
    assert rc == 0 and "no semantic difference" in out
