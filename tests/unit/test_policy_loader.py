"""The shipped policy loads; each kind of bad policy is one clear ``FILE:LINE`` line and exit 2."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cli.main import main
from app.errors import PolicyError
from app.policy import load_policy
from app.policy.loader import SEED_GUARDRAILS, SEED_ROLES, named_path, parse_policy
from app.resources import default_policy_path

SEED = default_policy_path().read_text(encoding="utf-8")
SEED_LINES = SEED.split("\n")


def line_of(needle: str, *, after: str | None = None) -> int:
    """1-based number of the first seed line equal to ``needle`` (stripped), after ``after``."""
    start = 0 if after is None else line_of(after)
    for number, text in enumerate(SEED_LINES[start:], start=start + 1):
        if text.strip() == needle:
            return number
    raise AssertionError(f"{needle!r} not in the seed policy")


def replace_line(number: int, new: str) -> str:
    lines = list(SEED_LINES)
    lines[number - 1] = new
    return "\n".join(lines)


def insert_after(number: int, new: str) -> str:
    lines = list(SEED_LINES)
    lines.insert(number, new)
    return "\n".join(lines)


def problems_of(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).splitlines() == info.value.problems
    return info.value.problems


# ── The shipped policy ──────────────────────────────────────────────────────────────


def test_shipped_policy_loads_without_errors() -> None:
    loaded = load_policy()
    assert loaded.path == default_policy_path()
    assert loaded.policy.version == "1.0.0"
    assert loaded.policy.privacy.local_only is False
    # The only warnings are the resolved contradictions C1..C10, each at its own line.
    assert len(loaded.warnings) == 13
    for i, warning in enumerate(loaded.warnings):
        line = line_of('id = "C1"') - 1 + 5 * i
        assert SEED_LINES[line - 1] == "[[resolutions]]"
        assert warning.startswith(f"{loaded.path}:{line}: resolutions[C{i + 1}]: ")
        assert f"resolved contradiction C{i + 1}: " in warning


def test_parse_policy_matches_load_policy(tmp_path: Path) -> None:
    target = tmp_path / "p.toml"
    loaded = parse_policy(SEED, target)
    assert loaded.path == target
    assert loaded.policy == load_policy().policy


def test_all_seed_roles_in_seed_order() -> None:
    policy = load_policy().policy
    # the seed's table, in its order, then the §2 sidecar (not a table row: C10)
    assert tuple(policy.roles) == (*SEED_ROLES, "second_opinion")
    assert policy.roles["second_opinion"].sidecar
    assert [r for r, spec in policy.roles.items() if spec.sidecar] == ["second_opinion"]
    assert SEED_ROLES == (
        "architect",
        "implementer",
        "librarian",
        "tutor",
        "judge",
        "tier2",
        "stage0",
        "ace",
        "embeddings",
        "cv",
    )


@dataclass(frozen=True)
class Row:
    default: str | None
    locality: str
    fallback: list[str]  # the seed's fallback column, aliases resolved
    alternatives: list[str]
    stand_in: str | None = None
    kind: str = "llm"


SEED_TABLE = {
    "architect": Row(
        "qwen3-14b", "local", ["gpt-5.1-high", "deepseek-reasoner"], ["ministral-3-14b"]
    ),
    "implementer": Row(
        "qwen2.5-coder-32b",
        "local",
        ["deepseek-reasoner", "deepseek-chat", "claude-sonnet-4.6", "gpt-5.1-high"],
        [],
    ),
    "librarian": Row(
        "llama-3.1-8b",
        "local",
        ["kimi-k2-instruct", "kimi-k2-thinking", "moonshot-v1-128k", "claude-sonnet-4.6"],
        ["qwen3-14b"],
    ),
    "tutor": Row("qwen2.5-coder-7b", "local", ["claude-haiku-4.5", "gpt-5.1-low"], []),
    "judge": Row(
        "gpt-5.1-high",
        "cloud",
        ["claude-opus-4.7", "claude-sonnet-4.6", "deepseek-reasoner"],
        ["claude-opus-4.7"],
        stand_in="qwen3-14b",
    ),
    "tier2": Row("claude-sonnet-4.6", "cloud", [], [], stand_in="llama-3.1-8b"),
    "stage0": Row(None, "local", [], [], kind="retrieval"),
    "ace": Row("llama-3.1-8b", "local", ["kimi-k2-instruct", "moonshot-v1-128k"], ["qwen3-14b"]),
    "embeddings": Row(
        "bge-m3", "local", ["text-embedding-3-small"], ["all-minilm-l6-v2"], kind="embedding"
    ),
    "cv": Row("yolo-trt", "local", [], [], kind="vision"),
}


@pytest.mark.parametrize("rid", SEED_ROLES)
def test_seed_role_defaults_and_fallbacks(rid: str) -> None:
    policy = load_policy().policy
    role, want = policy.roles[rid], SEED_TABLE[rid]
    assert (policy.resolve(role.default) if role.default else None) == want.default
    assert role.locality == want.locality
    assert role.kind == want.kind
    assert [policy.resolve(m) for m in role.fallback] == want.fallback
    # The escalation chain: a cloud role's own default first, then its fallbacks.
    first = [want.default] if want.locality == "cloud" else []
    assert policy.chain(rid) == first + [m for m in want.fallback if m not in first]
    assert [policy.resolve(a) for a in role.alternatives] == want.alternatives
    assert role.local_stand_in == want.stand_in
    # The escalation chain leaves the machine; the default of a local role never does.
    assert all(policy.is_cloud(m) for m in policy.chain(rid))
    if role.default:
        assert policy.is_cloud(role.default) == (want.locality == "cloud")


def test_seed_aliases_and_escalation_only_models() -> None:
    policy = load_policy().policy
    assert policy.roles["architect"].fallback == ["gpt-5.1-high", "deepseek-r2"]
    assert policy.resolve("deepseek-r2") == "deepseek-reasoner"
    assert policy.resolve("deepseek-coder") == "deepseek-chat"
    assert policy.resolve("notebooklm") == "claude-sonnet-4.6"
    only = {mid: m.escalation_only_roles for mid, m in policy.models.items() if m.escalation_only}
    assert only == {
        "deepseek-chat": ["implementer"],
        "deepseek-reasoner": ["implementer"],
        "kimi-k2-instruct": ["librarian", "ace"],
        "kimi-k2-thinking": ["librarian", "ace"],
        "kimi-k2-thinking-turbo": ["librarian", "ace"],
        "moonshot-v1-128k": ["librarian", "ace"],
    }
    assert all(
        m.price_in_usd_per_mtok == 0 for m in policy.models.values() if m.provider == "local"
    )


def test_seed_triggers_guardrails_and_tables() -> None:
    policy = load_policy().policy
    # the seed's 17, then the second-opinion sidecar's failure, High-Risk, confidence
    assert len(policy.triggers) == 21
    first = policy.triggers[0]
    assert (first.id, first.role, first.signal, first.op, first.threshold) == (
        "architect_low_confidence",
        "architect",
        "confidence",
        "lt",
        0.75,
    )
    failed = next(t for t in policy.triggers if t.id == "implementer_failed_loops")
    assert (failed.threshold, failed.target) == (2, "deepseek-reasoner")
    assert [t.id for t in policy.triggers_for("tutor")] == ["user_request"]
    assert tuple(policy.guardrails) == SEED_GUARDRAILS
    assert all(g.enabled for g in policy.guardrails.values())
    assert policy.local_chain.order == ["vllm", "llamacpp_server", "llamacpp_inprocess"]
    assert policy.consensus.enabled is False and policy.consensus.critic is False
    assert policy.embeddings.default == "bge-m3"
    assert policy.tiers["premium_judge"].models == ["gpt-5.1-high", "claude-opus-4.7"]


# ── Mutations of the shipped file ─────────────────────────────────────────────────────


@dataclass(frozen=True)
class Mutation:
    make: Callable[[], str | bytes]  # the broken file's content
    expected: Callable[[str], list[str]]  # the exact problem lines, given the file name


def _toml_syntax() -> str:
    return replace_line(line_of('status = "active"'), 'status = "active')


def judge_locality_line() -> int:
    return line_of('locality = "cloud"', after="[roles.judge]")


def judge_default_line() -> int:
    return line_of('default = "gpt-5.1-high"', after="[roles.judge]")


def _exact(line: Callable[[], int], text: str) -> Callable[[str], list[str]]:
    return lambda f: [f"{f}:{line()}: {text}"]


MUTATIONS: dict[str, Mutation] = {
    "unknown key in [roles.tutor]": Mutation(
        lambda: insert_after(line_of("[roles.tutor]"), 'colour = "blue"'),
        _exact(lambda: line_of("[roles.tutor]") + 1, "roles.tutor.colour: unknown key"),
    ),
    "fallback to an unknown model": Mutation(
        lambda: replace_line(
            line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]'),
            'fallback = ["gpt-5.1-high", "x"]',
        ),
        _exact(
            lambda: line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]'),
            "roles.architect.fallback: unknown model 'x' (not in [models] or [aliases])",
        ),
    ),
    "fallback to an unknown model first": Mutation(
        # (a trigger's check walked the chain and met it first: KeyError, a traceback)
        lambda: replace_line(
            line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]'),
            'fallback = ["gpt-9", "deepseek-r2"]',
        ),
        _exact(
            lambda: line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]'),
            "roles.architect.fallback: unknown model 'gpt-9' (not in [models] or [aliases])",
        ),
    ),
    "architect confidence threshold 1.5": Mutation(
        lambda: replace_line(line_of("threshold = 0.75"), "threshold = 1.5"),
        _exact(
            lambda: line_of("threshold = 0.75"),
            "triggers[architect_low_confidence].threshold: 1.5 is out of range 0..1",
        ),
    ),
    "escalation-only model as a default": Mutation(
        lambda: replace_line(
            line_of('default = "gpt-5.1-high"', after="[roles.judge]"),
            'default = "deepseek-reasoner"',
        ),
        _exact(
            lambda: line_of('default = "gpt-5.1-high"', after="[roles.judge]"),
            "roles.judge.default: an escalation-only model can never be a default",
        ),
    ),
    "local role with a cloud default": Mutation(
        lambda: replace_line(
            line_of('default = "qwen2.5-coder-7b"'), 'default = "claude-haiku-4.5"'
        ),
        _exact(
            lambda: line_of('default = "qwen2.5-coder-7b"'),
            "roles.tutor.default: a local role's default must be a local model",
        ),
    ),
    "a sidecar given a local stand-in": Mutation(
        lambda: insert_after(
            line_of("sidecar = true", after="[roles.second_opinion]"),
            'local_stand_in = "qwen3-14b"',
        ),
        _exact(
            lambda: line_of("sidecar = true", after="[roles.second_opinion]") + 1,
            "roles.second_opinion.local_stand_in: a sidecar is escalation-only: no local stand-in",
        ),
    ),
    "a cloud role that is not a sidecar needs a stand-in": Mutation(
        lambda: replace_line(
            line_of("sidecar = true", after="[roles.second_opinion]"), "sidecar = false"
        ),
        _exact(
            lambda: line_of("[roles.second_opinion]"),
            "roles.second_opinion.local_stand_in: a cloud role needs a local stand-in",
        ),
    ),
    "GR-003 switched off": Mutation(
        lambda: replace_line(
            line_of("enabled = true", after="[guardrails.GR-003]"), "enabled = false"
        ),
        _exact(
            lambda: line_of("enabled = true", after="[guardrails.GR-003]"),
            "guardrails.GR-003.enabled: GR-003 cannot be switched off (every guardrail is"
            " enforced by Switchyard)",
        ),
    ),
    "alias to an unknown model": Mutation(
        lambda: replace_line(line_of('haiku = "claude-haiku-4.5"'), 'haiku = "claude-haiku-9"'),
        _exact(
            lambda: line_of('haiku = "claude-haiku-4.5"'),
            "aliases.haiku: alias points to unknown model 'claude-haiku-9'",
        ),
    ),
    "version 2.0.0": Mutation(
        lambda: replace_line(line_of('version = "1.0.0"'), 'version = "2.0.0"'),
        _exact(
            lambda: line_of('version = "1.0.0"'),
            "policy.version: version 2.0.0 not supported (this Switchyard reads 1.x)",
        ),
    ),
    "version that is not x.y.z": Mutation(
        lambda: replace_line(line_of('version = "1.0.0"'), 'version = "١.0.0"'),
        _exact(
            lambda: line_of('version = "1.0.0"'),
            "policy.version: String should match pattern '^[0-9]+\\.[0-9]+\\.[0-9]+$' "
            "(got '١.0.0')",
        ),
    ),
    "memory weights not summing to 1": Mutation(
        lambda: replace_line(line_of("weight_dynamic = 0.2"), "weight_dynamic = 0.3"),
        _exact(
            lambda: line_of("[memory]"), "memory: search weights must sum to 1 (they sum to 1.1)"
        ),
    ),
    "a nan threshold (it would never fire)": Mutation(
        lambda: replace_line(line_of("threshold = 8"), "threshold = nan"),
        _exact(
            lambda: line_of("threshold = 8"),
            "triggers[architect_scope_large_steps].threshold: "
            "Input should be a finite number (got nan)",
        ),
    ),
    "an infinite budget": Mutation(
        lambda: replace_line(line_of("session_usd = 5.0"), "session_usd = inf"),
        _exact(
            lambda: line_of("session_usd = 5.0"),
            "budget.session_usd: Input should be a finite number (got inf)",
        ),
    ),
    "a number as text": Mutation(
        lambda: replace_line(line_of("session_usd = 5.0"), 'session_usd = "five"'),
        _exact(
            lambda: line_of("session_usd = 5.0"),
            "budget.session_usd: Input should be a valid number (got 'five')",
        ),
    ),
    # found by an audit: each was converted silently (strict: TOML's own types only)
    "a number as a numeric text": Mutation(
        lambda: replace_line(line_of("session_usd = 5.0"), 'session_usd = "5"'),
        _exact(
            lambda: line_of("session_usd = 5.0"),
            "budget.session_usd: Input should be a valid number (got '5')",
        ),
    ),
    "a switch as text": Mutation(
        lambda: replace_line(line_of("local_only = false"), 'local_only = "yes"'),
        _exact(
            lambda: line_of("local_only = false"),
            "privacy.local_only: Input should be a valid boolean (got 'yes')",
        ),
    ),
    # and each overflowed where it was made nano-dollars: a traceback in every command
    "a cap past any budget": Mutation(
        lambda: replace_line(line_of("session_usd = 5.0"), "session_usd = 1e308"),
        _exact(
            lambda: line_of("session_usd = 5.0"),
            "budget.session_usd: Input should be less than or equal to 1000000 (got 1e+308)",
        ),
    ),
    "a missing required key": Mutation(
        lambda: replace_line(line_of('status = "active"'), ""),
        _exact(lambda: line_of("[policy]"), "policy.status: missing required key"),
    ),
    "a missing seed role": Mutation(
        lambda: "\n".join(
            SEED_LINES[: line_of("[roles.cv]") - 1] + SEED_LINES[line_of("[roles.cv]") + 7 :]
        ),
        _exact(lambda: line_of("[roles.architect]"), "roles: the seed's role 'cv' is missing"),
    ),
    "a trigger target outside the role's chain": Mutation(
        lambda: replace_line(
            line_of('target = "deepseek-reasoner" # stuck loops → the thinking model'),
            'target = "claude-opus-4.7"',
        ),
        _exact(
            lambda: line_of('target = "deepseek-reasoner" # stuck loops → the thinking model'),
            "triggers[implementer_failed_loops].target: "
            "'claude-opus-4.7' is not in implementer's fallback chain",
        ),
    ),
    "a chain that lists a model twice (an alias and its model)": Mutation(
        lambda: replace_line(
            line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]'),
            'fallback = ["gpt-5.1-high", "deepseek-r2", "deepseek-reasoner"]',
        ),
        _exact(
            lambda: line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]'),
            "roles.architect.fallback: 'deepseek-reasoner' (as 'deepseek-r2' and "
            "'deepseek-reasoner') is listed twice",
        ),
    ),
    "a runtime listed twice in the local chain": Mutation(
        lambda: replace_line(
            line_of('order = ["vllm", "llamacpp_server", "llamacpp_inprocess"]'),
            'order = ["vllm", "vllm", "llamacpp_inprocess"]',
        ),
        _exact(
            lambda: line_of('order = ["vllm", "llamacpp_server", "llamacpp_inprocess"]'),
            "local_chain.order.1: runtime 'vllm' is listed twice",
        ),
    ),
    "a target on a trigger of every role": Mutation(
        lambda: insert_after(
            line_of('reason = "USER_REQUEST"', after='id = "user_request"'),
            'target = "gpt-5.1-high"',
        ),
        _exact(
            lambda: line_of('reason = "USER_REQUEST"', after='id = "user_request"') + 1,
            "triggers[user_request].target: a trigger of every role ('*') cannot name a target",
        ),
    ),
    "an alias of an alias": Mutation(
        lambda: replace_line(line_of('haiku = "claude-haiku-4.5"'), 'haiku = "deepseek-r2"'),
        _exact(
            lambda: line_of('haiku = "claude-haiku-4.5"'),
            "aliases.haiku: alias points to the alias 'deepseek-r2': name a model",
        ),
    ),
    "a bad high-risk regex": Mutation(
        lambda: replace_line(line_of("lines = []"), "lines = ['(unclosed']"),
        _exact(
            lambda: line_of("lines = []"),
            "high_risk.rules[build_tooling_routing].lines.0: bad regex: "
            "missing ), unterminated subpattern at position 0",
        ),
    ),
    "a provider over plain http to another host": Mutation(
        lambda: replace_line(
            line_of('base_url = "https://api.openai.com/v1"'),
            'base_url = "http://attacker.example/v1"',
        ),
        _exact(
            lambda: line_of('base_url = "https://api.openai.com/v1"'),
            "providers.openai.base_url: plain http to attacker.example would send "
            "OPENAI_API_KEY in clear: use https",
        ),
    ),
    "a provider URL with a user part": Mutation(
        lambda: replace_line(
            line_of('base_url = "https://api.openai.com/v1"'),
            'base_url = "https://api.openai.com@evil.example.net/v1"',
        ),
        _exact(
            lambda: line_of('base_url = "https://api.openai.com/v1"'),
            "providers.openai.base_url: a user or password in the URL: the key goes in api_key_env",
        ),
    ),
    "a provider URL that is a file": Mutation(
        lambda: replace_line(
            line_of('base_url = "https://api.openai.com/v1"'), 'base_url = "file:///etc/passwd"'
        ),
        _exact(
            lambda: line_of('base_url = "https://api.openai.com/v1"'),
            "providers.openai.base_url: expected an http(s) URL with a host, got "
            "'file:///etc/passwd'",
        ),
    ),
    "a key variable that is no variable name": Mutation(
        lambda: replace_line(
            line_of('api_key_env = "OPENAI_API_KEY"'), 'api_key_env = "OPENAI API KEY"'
        ),
        _exact(
            lambda: line_of('api_key_env = "OPENAI_API_KEY"'),
            "providers.openai.api_key_env: not an environment variable name: 'OPENAI API KEY'",
        ),
    ),
    "an unpriced cloud model": Mutation(
        lambda: replace_line(line_of("price_out_usd_per_mtok = 25.0"), ""),
        _exact(
            lambda: line_of('[models."claude-opus-4.7"]'),
            "models.claude-opus-4.7.price_out_usd_per_mtok: a cloud model needs its price: "
            "unpriced, its calls cost $0 and pass every cap (GR-011)",
        ),
    ),
    "no High-Risk trigger for the Judge": Mutation(
        lambda: replace_line(line_of('signal = "high_risk"'), 'signal = "user_request"'),
        _exact(
            lambda: line_of("[[triggers]]"),
            "triggers: no trigger sends the Judge to the cloud on high_risk: a High-Risk "
            "change would be judged locally and could never be merged (GR-002)",
        ),
    ),
    "a local Judge": Mutation(
        lambda: replace_line(
            line_of('locality = "cloud"', after="[roles.judge]"), 'locality = "local"'
        ),
        lambda f: [
            f"{f}:{judge_default_line()}: roles.judge.default: a local role's default must be "
            "a local model",
            f"{f}:{judge_locality_line()}: roles.judge.locality: the Judge is a cloud role "
            "(GR-002, GR-003)",
        ],
    ),
    "a negative provider cap": Mutation(
        lambda: replace_line(line_of("openai = 10.0"), "openai = -10.0"),
        _exact(
            lambda: line_of("openai = 10.0"),
            "budget.provider_day_usd.openai: Input should be greater than or equal to 0 "
            "(got -10.0)",
        ),
    ),
    "a multi-line key name": Mutation(
        lambda: insert_after(line_of("[roles.tutor]"), '"two\\nlines" = 1'),
        _exact(lambda: line_of("[roles.tutor]") + 1, "roles.tutor.two\\nlines: unknown key"),
    ),
}


def _write(tmp_path: Path, content: str | bytes) -> Path:
    target = tmp_path / "model-policy.toml"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    return target


def _assert_cli_exit_2(
    target: Path, problems: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["policy", "check", str(target)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"switchyard: {p}" for p in problems]
    assert "Traceback" not in err


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutation_is_one_clear_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutation = MUTATIONS[name]
    target = _write(tmp_path, mutation.make())
    problems = problems_of(target)
    assert problems == mutation.expected(str(target))
    _assert_cli_exit_2(target, problems, capsys)


def test_toml_syntax_error_names_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _write(tmp_path, _toml_syntax())
    problems = problems_of(target)
    assert len(problems) == 1
    line = line_of('status = "active"')
    assert re.fullmatch(rf"{re.escape(str(target))}:{line}:\d+: toml syntax: \S.*", problems[0])
    _assert_cli_exit_2(target, problems, capsys)


def test_toml_error_at_end_of_file_still_has_a_line(tmp_path: Path) -> None:
    target = _write(tmp_path, SEED.rstrip("\n") + "\n[unclosed")
    problems = problems_of(target)
    last = len(SEED.rstrip("\n").split("\n")) + 1
    assert re.fullmatch(rf"{re.escape(str(target))}:{last}:\d+: toml syntax: .*", problems[0])
    assert len(problems) == 1


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    line = line_of('status = "active"')
    target = _write(tmp_path, insert_after(line, 'status = "draft"'))
    [problem] = problems_of(target)
    assert problem.startswith(f"{target}:{line + 1}:") and "toml syntax" in problem
    # tomllib names no key ("Cannot overwrite a value"): the line's own is named
    assert problem.endswith("toml syntax: Cannot overwrite a value: 'status' is set twice")


def test_line_numbers_ignore_unicode_line_separators(tmp_path: Path) -> None:
    # These are legal in a TOML comment and do not end a TOML line (str.splitlines disagrees).
    text = replace_line(1, "# a comment with \u2028, \u2029 and \x85 inside")
    text = text.replace("threshold = 0.75", "threshold = 1.5", 1)
    target = _write(tmp_path, text)
    line = line_of("threshold = 0.75")
    assert problems_of(target) == [
        f"{target}:{line}: triggers[architect_low_confidence].threshold: 1.5 is out of range 0..1"
    ]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nope.toml"
    problems = problems_of(target)
    assert problems == [f"{target}: cannot read policy: no such file"]
    _assert_cli_exit_2(target, problems, capsys)


def test_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    problems = problems_of(tmp_path)
    assert problems == [f"{tmp_path}: cannot read policy: is a directory"]
    _assert_cli_exit_2(tmp_path, problems, capsys)


def test_a_file_larger_than_a_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """300 MB took 6.6 s and 1.5 GB to read, and was "ok" (an audit)."""
    big = tmp_path / "big.toml"
    big.write_text(default_policy_path().read_text() + "#" * (4 << 20))
    problems = problems_of(big)
    assert problems == [f"{big}: larger than a policy (4,194,304 bytes at most)"]
    _assert_cli_exit_2(big, problems, capsys)


@pytest.mark.parametrize("text", ["", "\n  \n", "\ufeff"])
def test_an_empty_file_is_one_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """It was one "missing required key" line per section of the policy (21 of them)."""
    target = _write(tmp_path, text)
    problems = problems_of(target)
    assert problems == [f"{target}: the policy file is empty"]
    _assert_cli_exit_2(target, problems, capsys)


def test_non_utf8_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = SEED.encode("utf-8")
    offset = data.index(b'title = "Tutor')
    target = _write(tmp_path, data[:offset] + b"\xff\xfe" + data[offset:])
    problems = problems_of(target)
    assert problems == [f"{target}:{line_of('[roles.tutor]') + 1}: not UTF-8 text (byte {offset})"]
    _assert_cli_exit_2(target, problems, capsys)


def test_an_item_of_an_id_d_list_is_named_by_its_id() -> None:
    """``triggers.0.threshold`` sent the reader counting ``[[triggers]]`` tables (a user
    audit): an item with an id is named by it, the file:line kept beside it."""
    raw = {
        "triggers": [{"id": "a_low", "threshold": 7.5}, {"id": "b", "x": 1}, {"x": 2}],
        "high_risk": {"rules": [{"id": "auth", "lines": ["("]}]},
        "twice": [{"id": "same"}, {"id": "same"}],
    }
    assert named_path(("triggers", 0, "threshold"), raw) == "triggers[a_low].threshold"
    assert named_path(("high_risk", "rules", 0, "lines", 0), raw) == (
        "high_risk.rules[auth].lines.0"
    )
    # no id, an id two items share, or the id itself in question: the index
    assert named_path(("triggers", 2, "x"), raw) == "triggers.2.x"
    assert named_path(("twice", 1), raw) == "twice.1"
    assert named_path(("triggers", 1, "id"), raw) == "triggers.1.id"
    assert named_path(("triggers", 0, "threshold")) == "triggers.0.threshold"  # no data
    assert named_path(("triggers", 9, "threshold"), raw) == "triggers.9.threshold"


def test_a_duplicate_trigger_id_is_named_by_its_index(tmp_path: Path) -> None:
    text = SEED.replace('id = "architect_scope_large_steps"', 'id = "architect_low_confidence"')
    problems = problems_of(_write(tmp_path, text))
    assert any(
        p.endswith("triggers.1.id: duplicate trigger id 'architect_low_confidence'")
        for p in problems
    ), problems


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = SEED.replace("threshold = 0.75", "threshold = 1.5", 1).replace(
        'haiku = "claude-haiku-4.5"', 'haiku = "nope"'
    )
    target = _write(tmp_path, text)
    problems = problems_of(target)
    assert len(problems) == 2
    assert all(p.startswith(f"{target}:") for p in problems)
    assert any("triggers[architect_low_confidence].threshold" in p for p in problems)
    assert any("aliases.haiku" in p for p in problems)


@pytest.mark.parametrize("gr", ["GR-001", "GR-006", "GR-007", "GR-008", "GR-010", "GR-012"])
def test_no_guardrail_can_be_switched_off(tmp_path: Path, gr: str) -> None:
    """Nothing read these switches: ``enabled = false`` was a warning saying the
    guardrail was off while it held (an audit). Every one is refused, naming the line."""
    line = line_of("enabled = true", after=f"[guardrails.{gr}]")
    target = _write(tmp_path, replace_line(line, "enabled = false"))
    (problem,) = problems_of(target)
    assert problem.startswith(f"{target}:{line}: guardrails.{gr}.enabled: {gr} cannot be")


def test_an_unusual_key_variable_is_a_warning_naming_where_it_goes(tmp_path: Path) -> None:
    line = line_of('api_key_env = "OPENAI_API_KEY"')
    target = _write(tmp_path, replace_line(line, 'api_key_env = "GITHUB_TOKEN"'))
    loaded = load_policy(target)
    said = [w for w in loaded.warnings if w.startswith(f"{target}:{line}: ")]
    assert said == [
        f"{target}:{line}: providers.openai.api_key_env: GITHUB_TOKEN is not a usual provider "
        "key (OPENAI_API_KEY, ANTHROPIC_API_KEY, DEEPSEEK_API_KEY, MOONSHOT_API_KEY): its "
        "value is sent to api.openai.com as the key"
    ]


def test_plain_http_to_loopback_stays_allowed_for_a_fake_provider(tmp_path: Path) -> None:
    line = line_of('base_url = "https://api.openai.com/v1"')
    for url in ("http://127.0.0.1:8123/v1", "http://localhost:9/v1", "http://[::1]:80/v1"):
        load_policy(_write(tmp_path, replace_line(line, f'base_url = "{url}"')))


def test_a_role_trigger_without_a_chain_to_escalate_on_is_a_warning(tmp_path: Path) -> None:
    line = line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]')
    target = _write(tmp_path, replace_line(line, "fallback = []"))
    loaded = load_policy(target)
    never = [w for w in loaded.warnings if "never escalates" in w]
    assert len(never) == 4  # the architect's four §3 triggers
    assert never[0].endswith(
        "triggers[architect_low_confidence].role: "
        "architect has no fallback chain: this never escalates"
    )


def test_a_model_with_no_context_window_cannot_serve_an_llm_role(tmp_path: Path) -> None:
    at = line_of("[models.qwen3-14b]")
    line = next(i for i in range(at, at + 12) if SEED_LINES[i - 1].startswith("context_window"))
    target = _write(tmp_path, replace_line(line, "context_window = 0"))
    default = line_of('default = "qwen3-14b"')
    assert problems_of(target)[0] == (
        f"{target}:{default}: roles.architect.default: "
        "'qwen3-14b' serves an LLM role: its context_window is 0"
    )
    # the shipped catalog's vision model has none, and serves no LLM role
    load_policy(_write(tmp_path, SEED))


def test_ollama_runtime_is_a_warning(tmp_path: Path) -> None:
    line = line_of('base_url = "http://127.0.0.1:8080/v1"')
    target = _write(tmp_path, replace_line(line, 'base_url = "http://127.0.0.1:11434/v1"'))
    loaded = load_policy(target)
    header = line_of("[runtimes.llamacpp_server]")
    assert any(
        w.startswith(f"{target}:{header}: runtimes.llamacpp_server: Ollama")
        for w in loaded.warnings
    )


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    target = _write(tmp_path, b"\xef\xbb\xbf" + SEED.encode("utf-8"))
    assert load_policy(target).policy == load_policy().policy


def test_triggers_that_always_or_never_fire_are_named(tmp_path: Path) -> None:
    """failed_loops >= 0 escalated on the first loop; an Architect trigger aimed at a
    model reserved for the Implementer could never escalate; both were called ok."""
    line = line_of("threshold = 2", after='id = "implementer_failed_loops"')
    loaded = load_policy(_write(tmp_path, replace_line(line, "threshold = 0")))
    assert any(
        w.startswith(f"{tmp_path / 'model-policy.toml'}:{line}: ") and "always fires" in w
        for w in loaded.warnings
    ), loaded.warnings
    at = line_of("threshold = 0.75", after='id = "architect_low_confidence"')
    reserved = _write(tmp_path, insert_after(at, 'target = "deepseek-r2"'))
    problems = problems_of(reserved)
    assert any("is escalation-only for implementer, not for architect" in p for p in problems)


def test_a_cloud_provider_on_loopback_is_a_warning(tmp_path: Path) -> None:
    """A self-hosted model labelled a cloud provider counts as cloud: a Judge served there
    can approve a merge (GR-003). Allowed (a proxy, a fake), and said."""
    line = line_of('base_url = "https://api.anthropic.com"')
    target = _write(tmp_path, replace_line(line, 'base_url = "http://127.0.0.1:9/v1"'))
    loaded = load_policy(target)
    (said,) = [w for w in loaded.warnings if "loopback" in w]
    assert "providers.anthropic.base_url: cloud provider anthropic" in said and "GR-003" in said


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://localhost:8080/v1"])
def test_a_cloud_provider_at_a_local_runtimes_address_is_refused(tmp_path: Path, url: str) -> None:
    """A provider pointed at vLLM's own address made a local model the "cloud" Judge that
    may approve merges; policy check said ok with a warning (a user audit)."""
    line = line_of('base_url = "https://api.anthropic.com"')
    problems = problems_of(_write(tmp_path, replace_line(line, f'base_url = "{url}"')))
    runtime = "vllm" if url.endswith(":8000/v1") else "llamacpp_server"
    assert any(
        f"providers.anthropic.base_url: {url} is where runtime {runtime} serves" in p
        and "GR-003" in p
        for p in problems
    ), problems


def test_a_cloud_provider_at_a_runtimes_second_endpoint_is_refused(tmp_path: Path) -> None:
    """A runtime's ``base_urls`` are its endpoints too (a review: only ``base_url`` was
    compared, and a provider at the second endpoint only got the loopback warning)."""
    at = line_of('base_url = "http://127.0.0.1:8000/v1"')
    text = insert_after(at, 'base_urls = ["http://127.0.0.1:8001/v1"]')
    line = 'base_url = "https://api.anthropic.com"'
    text = text.replace(line, 'base_url = "http://localhost:8001/v1"', 1)
    problems = problems_of(_write(tmp_path, text))
    assert any("is where runtime vllm serves" in p for p in problems), problems


def test_a_seed_trigger_taken_out_is_said(tmp_path: Path) -> None:
    """Without the Architect's confidence trigger ``policy check`` said "ok, policy
    1.0.0", and the Architect never escalated on a low confidence (a user audit)."""
    blocks = SEED.split("[[triggers]]")
    kept = [b for b in blocks if 'id = "architect_low_confidence"' not in b]
    assert len(kept) == len(blocks) - 1
    loaded = load_policy(_write(tmp_path, "[[triggers]]".join(kept)))
    said = [w for w in loaded.warnings if "§3's trigger" in w]
    assert said == [
        f"{tmp_path / 'model-policy.toml'}: triggers: §3's trigger architect_low_confidence "
        "(architect: confidence lt 0.75) is not in this policy: architect never escalates on it"
    ]
    assert not [w for w in load_policy().warnings if "§3's trigger" in w]  # the shipped one


def test_a_chain_of_models_reserved_for_other_roles_never_escalates_and_is_said(
    tmp_path: Path,
) -> None:
    """``fallback = ["kimi-k2-instruct"]`` for the Architect: Kimi is escalation-only for
    others, so the trigger fired and the route stayed LOCAL, with no word (a user audit)."""
    at = line_of('fallback = ["gpt-5.1-high", "deepseek-r2"]', after="[roles.architect]")
    loaded = load_policy(_write(tmp_path, replace_line(at, 'fallback = ["kimi-k2-instruct"]')))
    assert any("no cloud model of architect's chain may serve it" in w for w in loaded.warnings), (
        loaded.warnings
    )


def test_the_seed_trigger_list_is_the_shipped_policys() -> None:
    """The list the warning reads is fixed (a source checkout edits the shipped file in
    place): it must name exactly the shipped policy's §3 triggers."""
    from app.policy.loader import SEED_TRIGGERS

    shipped = load_policy().policy
    spelt = {
        (t.id, t.role, f"{t.signal} {t.op}{'' if t.threshold is None else f' {t.threshold:g}'}")
        for t in shipped.triggers
        if t.seed.startswith("§3")
    }
    assert set(SEED_TRIGGERS) == spelt
