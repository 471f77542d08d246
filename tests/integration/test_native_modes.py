"""The compiled hot modules (app/native.py) give what their sources give: one script run in
two fresh interpreters, every source in one (SWITCHYARD_NATIVE=0), the build in the other,
their outputs compared whole (the audit lines' text byte for byte, the decisions, the
JSON, the stamps, the counts, the maskings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app import native

SCRIPT = r"""
import json, math, sys
from datetime import UTC, datetime, timedelta
from app import native
from app.audit.base import _prepare
from app.audit.canonical import GENESIS_HASH
from app.audit.masking import mask_text
from app.clock import iso
from app.compact_json import encoder
from app.policy import load_policy
from app.router.decide import decide, fired_triggers
from app.router.types import RouterState, Signals
from app.tokens import count_text

out = {}
values = [
    0.1, 1e16, 1e-05, -0.0, 2**70, "é→\x00", "\ud800", [1, 2.5, None], {"b": 1, "a": [True]},
    {"z": {"y": 0.30000000000000004}, "n": None}, {"inf": math.inf}, {3: "int key"},
]
for name, enc in (("plain", encoder()), ("sorted", encoder(sort_keys=True))):
    out[name] = []
    for v in values:
        try:
            out[name].append(enc(v))
        except (TypeError, ValueError) as exc:
            out[name].append(type(exc).__name__)
lines = [
    ("escalation", "s1", None, "architect", "qwen3-14b", "gpt-5.1-high", ["ARCH_LOW_CONF"],
     {"confidence": 0.5, "inputs": {"left": {"openai": 9.99775}}}, {"model": "gpt-5.1-high"},
     "confidence 0.5 < 0.75 → gpt-5.1-high"),
    ("call", "s1", "run-1", "architect", None, "gpt-5.1-high", [], {"tokens_in": 200,
     "cost_usd": 0.00045, "nan": math.nan}, {}, "200 in / 20 out"),
    ("degradation", "s2", None, None, None, None, "ONE_CODE",
     {"detail": "Authorization: Bearer sk-abcdefghijklmnopqrstuvwxyz123456"}, None, "x\ud800y"),
    ("skip", "s3", None, "judge", None, "kimi-k2", ["SKIP_BUDGET"], {10: "a", 9: "b"}, {}, ""),
]
prev, chained = GENESIS_HASH, []
for seq, fields in enumerate(lines, 1):
    made = _prepare(*fields, "1.0.0").chain(seq, prev, "2026-12-06T08:00:00.123Z")
    prev = made.hash
    chained.append(made.text)
out["lines"] = chained
start = datetime(2026, 12, 6, 23, 59, 58, tzinfo=UTC)
out["iso"] = [iso(start + timedelta(microseconds=k * 123457)) for k in range(40)]
texts = ["", "hello world", "def f(x):\n    return x * 2\n" * 20, "日本語のテキスト" * 9,
         "key sk-abcdefghijklmnopqrstuvwxyz123456 and ghp_" + "a" * 36]
out["count"] = [count_text(t) for t in texts]
out["mask"] = [mask_text(t) for t in texts]
policy = load_policy().policy
cases = [
    ("architect", {"confidence": 0.5}, {}),
    ("architect", {"confidence": 0.9}, {}),
    ("implementer", {"failed_loops": 2}, {"session_left_usd": 0.0001}),
    ("librarian", {"context_estimate": 120_000}, {"local_only": True}),
    ("judge", {"high_risk": True}, {"denied": frozenset({"claude-opus-4.5"})}),
    ("architect", {"confidence": 0.2}, {"health": {"runtime:vllm": False}}),
]
out["decide"] = []
for role, signals, state in cases:
    s = Signals(**signals)
    fired = fired_triggers(policy, role, s)
    d = decide(policy, role, s, RouterState(**state), fired=fired)
    out["decide"].append(d.model_dump(mode="json"))
out["compiled"] = sorted(native.report().compiled)
print(json.dumps(out, sort_keys=True))
"""


def _run(switch: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    if switch is not None:
        env[native.ENV] = switch
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, env=env
    )
    result: dict[str, object] = json.loads(run.stdout)
    return result


USED = {
    "app.audit.base",
    "app.audit.masking",
    "app.audit.prepared",
    "app.clock",
    "app.compact_json",
    "app.router.decide",
    "app.tokens",
}


def test_the_compiled_modules_give_what_their_sources_give() -> None:
    # (make test builds them first; a checkout run otherwise says how to)
    finder = native.finder
    if finder is None:
        pytest.skip(f"the hot modules run as Python here ({native.off_because}): make native")
    stale = {
        name: why
        for name in USED
        if (why := native.why_not(name, finder.recorded, finder.package, finder.lib))
    }
    if stale:
        pytest.skip(f"not built as they are now ({stale}): make native")
    compiled, source = _run(None), _run("0")
    assert source.pop("compiled") == []
    used = compiled.pop("compiled")
    assert isinstance(used, list) and set(used) >= USED
    assert compiled == source
    assert len(compiled["lines"]) == 4 and len(compiled["decide"]) == 6  # type: ignore[arg-type]
