"""Stage0 holds no secret: the texts and the vocabulary it caches under ``.switchyard``,
and the brief it writes, are masked; the chunks still cite the file's own lines."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from app.audit.masking import REDACTED
from app.policy.schema import Policy
from app.stage0.brief import BRIEF_JSON, BRIEF_MD
from app.stage0.cache import unpack_texts
from app.stage0.engine import Stage0
from tests.integration.test_stage0_corpus import FILES, make_repo

AWS_ID = "AKIAIOSFODNN7EXAMPLE"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
TASK = "load the settings: DEEPSEEK_KEY and APP_SECRET from settings.py and .env"


def repo_files(canary: str, shaped: str) -> dict[str, str | bytes]:
    return {
        **FILES,
        ".env": f"APP_NAME=demo\nAPP_SECRET={shaped}\nDEEPSEEK_API_KEY={canary}\n",
        "settings.py": (
            '"""Settings of the demo: DEEPSEEK_KEY, APP_SECRET."""\n\n'
            "DEBUG = False\n"
            f'DEEPSEEK_KEY = "{canary}"\n'
            f'AWS_ID = "{AWS_ID}"\n\n\n'
            "def load_settings():\n"
            "    return {'debug': DEBUG, 'deepseek_key': DEEPSEEK_KEY}\n"
        ),
        "keys/deploy.pem": (
            "-----BEGIN PRIVATE KEY-----\n" + f"{PEM_BODY}\n" * 3 + "-----END PRIVATE KEY-----\n"
        ),
    }


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(a key only the environment net knows, a value only the .env shape knows)."""
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("DEEPSEEK_API_KEY", canary)
    return canary, f"s3cr3t-{uuid.uuid4().hex[:12]}"


def needles(*secrets: str) -> list[bytes]:
    """Each secret as written and lower-cased, and each of its parts the tokenizer keeps
    (the vocabulary holds lower-case identifier parts)."""
    out = set()
    for s in secrets:
        for form in (s, s.lower()):
            out.add(form.encode())
            out.update(p.encode() for p in form.replace("-", " ").split() if len(p) >= 12)
    return sorted(out)


def leaks(folder: Path, secrets: list[bytes]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(folder)}: {s!r}" for s in secrets if s in data]
    return found


def cached_texts(state: Path) -> str:
    db = sqlite3.connect(state / "stage0" / "cache.sqlite")
    try:
        rows = db.execute("SELECT meta, texts FROM blob").fetchall()
    finally:
        db.close()
    return "\n".join(meta + json.dumps(unpack_texts(t)) for meta, t in rows)


def test_the_cache_and_the_brief_hold_no_secret(
    tmp_path: Path, policy: Policy, secrets: tuple[str, str]
) -> None:
    canary, shaped = secrets
    repo = make_repo(tmp_path, repo_files(canary, shaped))
    out = repo / ".switchyard" / "brief"
    # the spec is copied into the brief as it is, not through the (masked) index
    spec = tmp_path / "spec.md"
    spec.write_text(f"# Spec\n\nStaging runs with APP_SECRET={shaped} and {AWS_ID}.\n")
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK, out, spec=spec)
    assert brief.spec is not None and shaped in brief.spec.text  # the reader's copy

    # the brief did quote both files, masked, at the file's own line numbers
    quoted: dict[tuple[str, int], str] = {}
    for c in brief.chunks:
        for number, line in enumerate(c.text.splitlines(), start=c.start):
            quoted[(c.path, number)] = line
    assert quoted[("settings.py", 4)] == f'DEEPSEEK_KEY = "{REDACTED}"'
    assert quoted[("settings.py", 5)] == f'AWS_ID = "{REDACTED}"'
    assert quoted[(".env", 2)] == f"APP_SECRET={REDACTED}"
    assert quoted[(".env", 3)] == f"DEEPSEEK_API_KEY={REDACTED}"
    md = (out / BRIEF_MD).read_text()
    assert f'DEEPSEEK_KEY = "{REDACTED}"' in md
    assert f"Staging runs with APP_SECRET={REDACTED} and {REDACTED}." in md

    every = needles(canary, shaped, AWS_ID, PEM_BODY)
    assert leaks(repo / ".switchyard", every) == []
    texts = cached_texts(repo / ".switchyard")
    assert not [s for s in every if s.decode() in texts]
    assert json.loads((out / BRIEF_JSON).read_text())["task"] == TASK


def test_a_key_exported_after_the_cache_was_built_is_masked_on_the_next_open(
    tmp_path: Path, policy: Policy, secrets: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    canary, shaped = secrets
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    repo = make_repo(tmp_path, repo_files(canary, shaped))
    with Stage0(repo, policy) as s0:
        first = s0.query("DEEPSEEK_KEY settings")
    # no net knew the key yet: the cache held it (the test's premise)
    assert any(canary in c.text for c in first.chunks + first.code_units)
    assert canary in cached_texts(repo / ".switchyard")

    monkeypatch.setenv("DEEPSEEK_API_KEY", canary)
    with Stage0(repo, policy) as s0:
        again = s0.query("DEEPSEEK_KEY settings")
        # the rules changed: every content was read and analyzed again
        assert {"settings.py", ".env"} <= set(s0.report.tokenized)
    assert not any(canary in c.text for c in again.chunks + again.code_units)
    assert any(REDACTED in c.text for c in again.chunks + again.code_units)
    assert leaks(repo / ".switchyard", needles(canary)) == []
    assert canary not in cached_texts(repo / ".switchyard")


def test_a_secret_typed_in_a_query_is_masked_before_it_is_matched_or_echoed(
    tmp_path: Path, policy: Policy, secrets: tuple[str, str]
) -> None:
    canary, shaped = secrets
    repo = make_repo(tmp_path, repo_files(canary, shaped))
    with Stage0(repo, policy) as s0:
        result = s0.query(f"settings DEEPSEEK_KEY {canary}")
    assert result.query == f"settings DEEPSEEK_KEY {REDACTED}"
    assert canary not in result.model_dump_json()
    assert "settings.py" in {c.path for c in result.chunks}
