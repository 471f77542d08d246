"""What leaves the machine through the gateway is masked of the common credential
shapes: a JWT, a GitLab, npm or Hugging Face token and a quoted ``db_pass`` in a
client's prompt reached the cloud fakes as they were (a user audit). Each protocol is
sent with its real SDK to a real `switchyard serve` whose escalations go to loopback
fakes of OpenAI and Anthropic; what each fake received is read back, and the audit."""

from __future__ import annotations

import json
from typing import Any

from app.audit.masking import REDACTED
from tests.integration import test_gateway_tools
from tests.integration.test_gateway import Gateway, lines_of
from tests.unit.test_masking import COMMON_CREDENTIALS

# the tools tests' gateway: vLLM, the OpenAI cloud and Claude fakes, --approve allow
gw = test_gateway_tools.gw

PROMPT = "Why does the deploy fail? My config:\n" + "\n".join(t for t, _ in COMMON_CREDENTIALS)
SECRETS = [secret for _, secret in COMMON_CREDENTIALS]
#: the architect unsure escalates to the OpenAI cloud
UNSURE = {"x-switchyard-signal": "confidence=0.5"}


def _assert_masked(body: dict[str, Any]) -> None:
    sent = json.dumps(body, ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in sent, secret
    assert sent.count(REDACTED) == len(SECRETS), sent


def test_each_protocol_sends_the_cloud_no_common_credential(gw: Gateway) -> None:
    gw.openai.chat.completions.create(
        model="architect",
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers=UNSURE,
    )
    gw.openai.responses.create(model="architect", input=PROMPT, extra_headers=UNSURE)
    # the tutor escalates to the Anthropic cloud on the user's request
    gw.anthropic.messages.create(
        model="tutor+escalate", max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    )
    assert len(gw.cloud.chat_requests) == 2 and len(gw.claude.message_requests) == 1
    for body in [*gw.cloud.chat_requests, *gw.claude.message_requests]:
        _assert_masked(body)
    calls = [
        ln for ln in lines_of("call") if ln["values"].get("provider") in ("openai", "anthropic")
    ]
    assert [ln["values"]["secrets_masked"] for ln in calls] == [len(SECRETS)] * 3
    audit = json.dumps(lines_of(), ensure_ascii=False)
    assert not [secret for secret in SECRETS if secret in audit]
