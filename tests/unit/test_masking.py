"""The one masker (app.audit.masking): what it masks, what it leaves alone, and how.

Every file Switchyard writes and every cloud request go through it, so a miss leaks a
key and a false positive rewrites ordinary code a model reads: both directions are
tested, and the masker is run over this repository's own code, which must not change.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit.masking import (
    REDACTED,
    Masker,
    mask_bytes,
    mask_text,
    mask_value,
    masking_fingerprint,
)
from app.audit.quick_redact import redact_fields
from app.audit.redact import RedactingFormatter, redact

ROOT = Path(__file__).resolve().parents[2]

AWS_ID = "AKIAIOSFODNN7EXAMPLE"
PEM_BODY = [
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKk",
    "Q2xhc3NpY2FsIGJhc2U2NCBmaWxsZXIgbGluZSBmb3IgYSB0ZXN0IGtleQ==",
]
PEM = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *PEM_BODY, "-----END RSA PRIVATE KEY-----"])
#: credentials a user audit found reaching the cloud as they were: made up, in their shapes
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4g"
    "RG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
GITLAB_PAT = "glpat-" + "x7Rk2Qm9Lp4Vt8Zw1Nc3"
NPM_TOKEN = "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
DB_PASS = "s3cr3t!"
#: each in a line as a prompt, a config or a log would hold it, and the value that must go
COMMON_CREDENTIALS = (
    (f"curl -H 'Authorization: JWT {JWT}' https://api.example.com", JWT),
    (f'curl -H "PRIVATE-TOKEN: {GITLAB_PAT}" https://gitlab.example.com/api/v4/user', GITLAB_PAT),
    (f"//registry.npmjs.org/:_authToken={NPM_TOKEN}", NPM_TOKEN),
    (f"HfApi(token={HF_TOKEN!r}).whoami()", HF_TOKEN),
    (f'db_pass: "{DB_PASS}"', DB_PASS),
)


def masked(text: str) -> str:
    return Masker(None).text(text)


def assert_gone(out: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in out, out
    assert REDACTED in out


# ── what is masked ───────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"aws_access_key_id = {AWS_ID}", AWS_ID, "aws_access_key_id = "),
        ("creds: ASIAY34FZKBOKMUTVV7A,", "ASIAY34FZKBOKMUTVV7A", "creds: "),
        ("APP_SECRET=s3cr3t-value-42", "s3cr3t-value-42", "APP_SECRET="),
        ("export GITHUB_TOKEN=abcdef123456", "abcdef123456", "export GITHUB_TOKEN="),
        ('DB_PASSWORD="hunter22"', "hunter22", 'DB_PASSWORD="'),
        ("DB_PASSWORD='pass word 1'", "pass word 1", "DB_PASSWORD='"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG", "AWS_"),
        ("GCP_PRIVATE_KEY=MIIEvQIBADANBgkq", "MIIEvQIBADANBgkq", "GCP_PRIVATE_KEY="),
        ("+SESSION_SECRET=changeme-now", "changeme-now", "+SESSION_SECRET="),  # a diff line
        ("  SLACK_TOKEN=xoxq-not-a-slack-shape", "xoxq-not-a-slack-shape", "  SLACK_TOKEN="),
        ("env: CI=1 DEPLOY_TOKEN=tok987654 make", "tok987654", "DEPLOY_TOKEN="),
        ('SECRET_KEY = "django-insecure-x8#k2!p"', "django-insecure-x8#k2!p", "SECRET_KEY = "),
        ("API_TOKEN = 'Zm9vYmFyYmF6cXV4'", "Zm9vYmFyYmF6cXV4", "API_TOKEN = "),
        ('{"text": "A=1\\nAPP_SECRET=s3cr3t-value-42\\n"}', "s3cr3t-value-42", '"text"'),
        ("Authorization: Bearer tok_0123456789", "tok_0123456789", "Bearer "),
        ("sk-" + "Ab1" * 8, "Ab1" * 8, ""),
        ("x-api-key: abc123secretvalue", "abc123secretvalue", "x-api-key: "),
        ('api_key = "0123456789abcdef"', "0123456789abcdef", "api_key = "),
        # a URL's password (a database URL in a task, a config, a log line)
        ("postgresql://admin:S3cretPass@db.example.com/prod", "S3cretPass", "//admin:"),
        ('url = "mysql+pymysql://root:r00t@localhost/x"', "r00t", "//root:"),
        ("git clone https://bot:ghx-abc123@git.example.org/r", "ghx-abc123", "https://bot:"),
        # a password by name, in any case
        ("password=hunter2hunter2", "hunter2hunter2", "password="),
        ('{"db": {"passwd": "correct horse 9"}}', "correct horse 9", '"passwd": "'),
        ("Password: 'Tr0ub4dor&3'", "Tr0ub4dor&3", "Password: "),
        # a key-like value assigned unquoted, with spaces (INI, YAML, a pasted key)
        ("SECRET_TOKEN = Zx9vQ2mLk8Rt", "Zx9vQ2mLk8Rt", "SECRET_TOKEN = "),
        # found by review: a URL with no user, an unquoted password no code spells, a short
        # quoted one, one holding the other quote, and a URL password starting with $ or %
        ("REDIS_URL=redis://:Pa55word@cache:6379/0", "Pa55word", "redis://:"),
        ("mysql --password=P@ssw0rd1 db", "P@ssw0rd1", "--password="),
        ('psql "host=x password=S3cr3t!x"', "S3cr3t!x", "password="),
        ('{"password": "abc123"}', "abc123", '{"password": "'),
        ('{"password": "it\'s my secret phrase"}', "it's my secret phrase", '"password": "'),
        ("https://u:$uperS3cret@h/x", "$uperS3cret", "https://u:"),
        ("https://u:%21abc@h/x", "%21abc", "https://u:"),
        # a key shown in part, as OpenAI's 401 words it: its ends still name the key
        (
            "Incorrect API key provided: sk-proj-********************xyzQ.",
            "xyzQ",
            "Incorrect API key provided: ",
        ),
        ("got sk-ant-a********************efXY back", "efXY", "got "),
    ],
)
def test_shapes_are_masked_and_the_name_stays(text: str, secret: str, kept: str) -> None:
    masker = Masker(None)
    out = masker.text(text)
    assert_gone(out, secret)
    assert kept in out
    assert masker.count == 1


@pytest.mark.parametrize(("text", "secret"), COMMON_CREDENTIALS)
def test_common_credentials_are_masked(text: str, secret: str) -> None:
    """A JWT, a GitLab, npm or Hugging Face token, a quoted password assigned to
    ``db_pass``: each reached the cloud fake unmasked (a user audit)."""
    masker = Masker(None)
    out = masker.text(text)
    assert_gone(out, secret)
    assert masker.count == 1
    assert masker.text(out) == out  # idempotent


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (JWT, REDACTED),
        (f"id_token={JWT}&state=x", f"id_token={REDACTED}&state=x"),
        # unsigned (alg none): its header and claims still go
        (JWT.rsplit(".", 1)[0] + ". next", f"{REDACTED} next"),
        (f"{GITLAB_PAT}.", f"{REDACTED}."),
        (f'"token": "{NPM_TOKEN}"', f'"token": "{REDACTED}"'),
        (f"HF_TOKEN={HF_TOKEN}", f"HF_TOKEN={REDACTED}"),
        (f"export HUGGING_FACE_HUB_TOKEN={HF_TOKEN}", f"export HUGGING_FACE_HUB_TOKEN={REDACTED}"),
        # a .env's password variable (``PASS`` alone is every test run's ``PASSED``)
        ("DB_PASS=hunter22", f"DB_PASS={REDACTED}"),
        ("export SMTP_PASS=Zq9-w3x", f"export SMTP_PASS={REDACTED}"),
        # the quoted literal under a secret-looking name, in each spelling
        ('db_pass: "s3cr3t!"', f'db_pass: "{REDACTED}"'),
        ("DB_PASS = 's3cr3t!'", f"DB_PASS = '{REDACTED}'"),
        ('"smtp-pass": "hunt3r!!"', f'"smtp-pass": "{REDACTED}"'),
        ('pass="s3cr3t!"', f'pass="{REDACTED}"'),
        ('password := "s3cr3t!"', f'password := "{REDACTED}"'),
        ('secret = "abc123"', f'secret = "{REDACTED}"'),
        ("Token: 'x9y8z7'", f"Token: '{REDACTED}'"),
        ('connect(token="tok-42a")', f'connect(token="{REDACTED}")'),
        ('api_key = "k3y-001"', f'api_key = "{REDACTED}"'),
        ('{dbPass: "s3cr3t!"}', f'{{dbPass: "{REDACTED}"}}'),
        ('clientSecret: "p4ssw0rd"', f'clientSecret: "{REDACTED}"'),
        ('openaiApiKey = "abc-123"', f'openaiApiKey = "{REDACTED}"'),
        ('self.token = "9f8e7d6c"', f'self.token = "{REDACTED}"'),
    ],
)
def test_new_shapes_mask_only_the_value(text: str, masked: str) -> None:
    assert mask_text(text) == (masked, 1)


@pytest.mark.parametrize(
    "text",
    [
        # prefixes in names and words: no key's body after them
        "from huggingface_hub import hf_hub_download; hf_hub_download(repo_id=r)",
        "npm_config_cache=/tmp/npm npm_package_version=1.0.0",
        "glpat-short and glpat-xxx",
        "eyJ alone, eyJhbGciOiJIUzI1NiJ9 (one segment), eyJhbGci.eyJzdWIi (too short)",
        "a hf_" + "a" * 33 + " is one short",
        "BYPASS=enabled1 COMPASS=northwest",
        "12 tests PASSED; PASS: TestParse",
        # the quoted literal: code and data that only look like it
        'bypass = "route-66"',
        'BYPASS = "route-66"',
        'token_type = "bearer2"',
        'tokens = "ab12cd"',
        'if token == "abc123":',
        'token != "abc123"',
        'secret = "s3c"',  # short
        'secret = "topsecret"',  # no digit
        'db_pass: "correct-horse!"',  # no digit (a password name takes it)
        'the secret = "to happ1ness"',  # a blank in it
        'dbPass = "user_token_2"',  # a name
        'dbPass: "app.v2.key"',
        '"OutputToken": "Jobs[-1].JobId"',
        'api_key = "${API_KEY_1}"',
        'token = "<extra_id_0>"',
        'mask_token = "[MASK]"',
        'imageToken: "|SPEAKER|"',
        'prefix_token = "▁<PRE>"',
        'pad_token = "<|pad_0|>"',
        'bos_token="__start__"',
        'api_key="hf_..."',
        'token="hf_***"',
        'SECRET: "/run/secrets/db_2"',
        'dbPass = "~/.pa55"',
        'pass: "./s3cret.txt"',
        "token: str = 'abc123'",  # a type between: not caught (said so)
        "db_pass:   's3cr3t!'",  # aligned columns: not caught (said so)
        "db_pass: s3cr3t!",  # unquoted: not caught (said so)
        'opts = dict(prompt="Token: ", default="x1y2z3")',
    ],
)
def test_code_and_data_like_the_new_shapes_stay(text: str) -> None:
    assert mask_text(text) == (text, 0)


def test_the_look_finds_each_family_in_one_pass() -> None:
    """The cheap look is one automaton: each family's bit from its markers, and none for
    a text without them (every cloud request and audit line is looked at so)."""
    from app.audit import masking as m

    assert m.families("plan the fix") == 0
    assert m.families("for token in tokens: pass") == 0  # names alone, not assigned
    assert m.families(f"x {JWT}") == m.PREFIXED
    assert m.families(f"x {NPM_TOKEN}") == m.PREFIXED
    assert m.families('db_pass: "s3cr3t!"') == m.ASSIGNED
    assert m.families('DB_PASS = "s3cr3t!"') == m.ASSIGNED | m.CS_SHAPES
    assert m.families("password=x") == m.CI_SHAPES | m.ASSIGNED
    assert m.families("api_key=x") == m.CI_SHAPES | m.ASSIGNED
    assert m.families("AKIA") == m.CS_SHAPES
    assert m.families("secret") == 0 and m.families("secret=x") & m.LOWER_SHAPE
    assert m.families("https://u:p@h") == m.URL_PASSWORD
    # a character an ignore-case shape folds to ASCII: every family, as str.lower() found
    assert m.families("api_\u212aey") == m.ALL_FAMILIES


def test_a_private_key_block_keeps_its_markers_and_its_lines() -> None:
    text = f"key = '''\n{PEM}\n'''\nprint(key)\n"
    masker = Masker(None)
    out = masker.text(text)
    assert_gone(out, *PEM_BODY)
    assert out.count("\n") == text.count("\n")
    assert "-----BEGIN RSA PRIVATE KEY-----" in out and "-----END RSA PRIVATE KEY-----" in out
    assert "print(key)" in out
    assert masker.count == 1


def test_a_private_key_in_a_diff_keeps_the_diff_marks() -> None:
    diff = "\n".join(["@@ -0,0 +1,5 @@", *("+" + line for line in PEM.splitlines()), " context"])
    out = masked(diff)
    assert_gone(out, *PEM_BODY)
    lines = out.splitlines()
    assert [line[0] for line in lines[1:6]] == ["+"] * 5
    assert lines[2] == "+" + REDACTED
    assert lines[-1] == " context"


def test_a_body_line_starting_with_plus_is_not_taken_for_a_diff_mark() -> None:
    body = "+" + PEM_BODY[0][1:]
    out = masked(f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    assert out.splitlines()[1] == REDACTED


@pytest.mark.parametrize("keep", [slice(0, 3), slice(2, None)])
def test_a_key_cut_in_half_is_masked_on_either_side_of_its_marker(keep: slice) -> None:
    """A chunk, a log tail or a hunk may hold one marker and part of the body."""
    part = "\n".join(PEM.splitlines()[keep]) + "\nnext = 1\n"
    out = masked("intro\n" + part)
    shown = [line for line in PEM_BODY if line in part]
    assert shown
    assert_gone(out, *shown)
    assert "next = 1" in out and out.startswith("intro\n")
    assert out.count("\n") == part.count("\n") + 1


def test_a_private_key_in_a_json_string() -> None:
    """A service-account file holds its key on one line, newlines escaped."""
    body = "\\n".join(PEM_BODY)
    text = json.dumps({"private_key": "x"})[:-3] + (
        f'"-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----\\n"}}'
    )
    out = masked(text)
    assert_gone(out, *PEM_BODY)


def test_environment_values_are_masked_whatever_their_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "plain-looking-value-1234")
    monkeypatch.setenv("PAYMENTS_SECRET", "payments-value-5678")
    monkeypatch.setenv("PATH_TOKEN", "short")  # too short to mask safely
    out, count = mask_text("a plain-looking-value-1234 b payments-value-5678 c short")
    assert out == f"a {REDACTED} b {REDACTED} c short"
    assert count == 2


def test_a_multi_line_environment_value_keeps_the_line_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPLOY_PRIVATE_TOKEN", "line-one-abc\nline-two-def")
    out, count = mask_text("x\nline-one-abc\nline-two-def\ny")
    assert out == f"x\n{REDACTED}\n\ny" and count == 1


# ── what is left alone ───────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "text",
    [
        "token = tokens[0]",
        "for token in tokenize(text):",
        'password = os.environ["DB_PASSWORD"]',
        "PASSWORD = os.environ.get('PASSWORD')",
        "def connect(api_key: str, token: str | None = None) -> None:",
        "client = OpenAI(api_key=api_key)",
        "self.api_key = settings.OPENAI_API_KEY",
        'api_key = os.getenv("OPENAI_API_KEY")',
        'TOKEN = re.compile(r"\\s*(?:(\\d+)|(.))")',
        'ACCESS_TOKEN = "access_token"',
        'ENV_API_KEY = "ANTHROPIC_API_KEY"',
        'api_key = "X-API-Key"',
        'api_key="<your-api-key>"',
        "SECRET_KEY = None",
        "MAX_TOKENS=4096",
        "TOKEN=${TOKEN}",
        "export GITHUB_TOKEN=$(gh auth token)",
        "PASSWORD=",
        "PWD=/home/dev/project",
        '<div class="sk-toggleable__label-arrow">',
        "Use bearer authentication.",
        "the -----BEGIN PUBLIC KEY----- block",
        'BEGIN = "-----BEGIN RSA PRIVATE KEY-----"\nEND = "-----END RSA PRIVATE KEY-----"',
        'if line.startswith("-----BEGIN PRIVATE KEY-----"):\n    pass\nelse:\n    pass',
        "    pass\nif line == '-----END PRIVATE KEY-----':",
        "ASIAN markets, AKIA in a word",
        "sk-learn",
        # URLs without a password, or with a template's slot where it goes
        "http://localhost:8000/v1",
        "ssh://git@github.com/org/repo.git and http://[::1]:4000/v1",
        "https://user:${DB_PASS}@db/x, postgres://u:<password>@h/d, https://u:****@h",
        "see https://example.com/a:b@c",
        "postgresql://user:password@host:5432/db (the form of a URL, documented)",
        # a password by name, with no literal for it
        "connect(password=db_password)",
        "password: str | None = None",
        "def login(user, password):",
        "SECRET_KEY = settings_v2",
        "TOKEN = 12345678",
        # found by review: a prompt's own closing quote is no value's opening one, and
        # number literals, sudoers' NOPASSWD and template slots are no secrets
        '@click.option("--password", prompt="Password: ", hide_input=True)',
        'input("Enter password: ").strip() or fallback_password',
        'opts = dict(prompt="Password: ", default="x")',
        "MAX_TOKEN = 0x7FFFFFFF",
        "INVALID_TOKEN = 0xFFFFFFFF",
        "deploy ALL=(ALL) NOPASSWD:/usr/local/bin/backup2",
        "postgres://u:$DB_PASS@db/x and mysql://u:%(pw)s@db/x",
        "password=correcthorsebattery",  # a name: it may be a variable (not masked)
    ],
)
def test_ordinary_code_and_text_are_left_alone(text: str) -> None:
    masker = Masker(None)
    assert masker.text(text) == text
    assert masker.count == 0


def test_a_long_run_of_scheme_characters_takes_linear_time() -> None:
    """The URL shape began a scheme again after every '.' of a run and rescanned it: a 32 KB
    text took 2 s (200 KB ~ a minute). Checked by the shape's form (a bounded scheme that
    starts only where no scheme character stands before it), not timed; and a password
    after a 200 KB run is still found."""
    from app.audit.masking import _URL_PASSWORD

    assert "{0,31}" in _URL_PASSWORD[0].pattern and "(?<![a-z0-9+.-])" in _URL_PASSWORD[0].pattern
    text = "a." * 100_000 + " http://u:S3cret99@x"
    assert masked(text).endswith("http://u:[REDACTED]@x")


def test_this_repository_s_own_code_is_left_alone() -> None:
    """app/, the demo and the shipped policy hold no secret: masking changes nothing."""
    masker = Masker(None)
    changed = []
    for root in ("app", "examples", "policy"):
        for path in sorted((ROOT / root).rglob("*")):
            if path.suffix not in {".py", ".md", ".toml", ".json", ".txt"}:
                continue
            text = path.read_text(encoding="utf-8")
            if masker.text(text) != text:
                changed.append(str(path.relative_to(ROOT)))
    assert changed == []


# ── the values walk, the counts, bytes ───────────────────────────────────────────────────


def test_values_are_walked_and_counted() -> None:
    data = {
        "password": "anything",
        "log": f"APP_SECRET=s3cr3t-value-42\n{AWS_ID}",
        "list": ("sk-" + "Zy9" * 8, 3, None, True),
        "empty_secret": {"secret": ""},
    }
    out, count = mask_value(data)
    assert out == {
        "password": REDACTED,
        "log": f"APP_SECRET={REDACTED}\n{REDACTED}",
        "list": [REDACTED, 3, None, True],
        "empty_secret": {"secret": ""},
    }
    assert count == 4


def test_bytes_keep_what_is_not_utf8() -> None:
    data = b"\xff\xfe APP_SECRET=s3cr3t-value-42\n\x80"
    out = mask_bytes(data)
    assert out.startswith(b"\xff\xfe APP_SECRET=" + REDACTED.encode())
    assert out.endswith(b"\n\x80")
    assert mask_bytes(b"\xff nothing here") == b"\xff nothing here"


def test_the_fingerprint_follows_the_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = masking_fingerprint()
    monkeypatch.setenv("OPENAI_API_KEY", "value-of-the-key-1")
    after = masking_fingerprint()
    assert before != after
    assert "value-of-the-key-1" not in after
    monkeypatch.setenv("UNRELATED", "value-of-the-key-2")
    assert masking_fingerprint() == after


def test_the_log_formatter_masks_messages_and_tracebacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "moonshot-canary-value-9")
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError("upstream said: moonshot-canary-value-9")
    except RuntimeError:
        exc_info = sys.exc_info()
    args = ("moonshot-canary-value-9", AWS_ID)
    record = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "%s, %s", args, exc_info)
    out = formatter.format(record)
    assert_gone(out, "moonshot-canary-value-9", AWS_ID)
    assert "RuntimeError" in out


# ── properties ───────────────────────────────────────────────────────────────────────────

_SECRETS = [
    AWS_ID,
    "APP_SECRET=s3cr3t-value-42",
    "sk-" + "Ab1" * 8,
    PEM,
    "\n".join(PEM.splitlines()[:3]),
    'SECRET_KEY = "django-insecure-x8#k2!p"',
    "Bearer tok_0123456789",
]
_FILLER = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_PIECES = st.lists(st.one_of(_FILLER, st.sampled_from(_SECRETS)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(_PIECES)
def test_masking_keeps_lines_and_is_idempotent(pieces: list[str]) -> None:
    text = "\n".join(pieces)
    once = masked(text)
    assert once.count("\n") == text.count("\n")
    assert masked(once) == once


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["detail", "password", "values", "k"]), _PIECES))
def test_the_audit_quick_path_equals_redact(fields: dict[str, list[str]]) -> None:
    plain = {k: "\n".join(v) if k != "values" else v for k, v in fields.items()}
    assert redact_fields(plain) == redact(plain)


def test_a_key_variable_the_policy_names_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``api_key_env = "KIMI_KEY"`` matches no usual key name: its value went unmasked
    into the audit, the evidence and another provider's request."""
    from app.audit import masking
    from app.policy import load_policy
    from app.resources import default_policy_path

    monkeypatch.setattr(masking, "_policy_key_names", frozenset())  # restored afterwards
    monkeypatch.setenv("KIMI_KEY", "kimiPLAINvalue0987654321")
    text = default_policy_path().read_text()
    assert 'api_key_env = "MOONSHOT_API_KEY"' in text
    policy = tmp_path / "policy.toml"
    policy.write_text(text.replace('"MOONSHOT_API_KEY"', '"KIMI_KEY"'))
    said = "my key is kimiPLAINvalue0987654321"
    assert mask_text(said) == (said, 0)  # not a key until a policy says so
    load_policy(policy)
    assert mask_text(said) == (f"my key is {REDACTED}", 1)
    assert redact_fields({"detail": said}) == {"detail": f"my key is {REDACTED}"}


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "aws_secret_access_key = Qm9vZ2llQm9vZ2llQm9vZ2ll12",
            "aws_secret_access_key = [REDACTED]",
        ),
        ('secret_key = "Zx9Lq2pW8vR4tY6uI0oP"', 'secret_key = "[REDACTED]"'),
        ("client_secret='Pp4Oo3Ii2Uu1Yy0Tt9'", "client_secret='[REDACTED]'"),
        ("token=abc123def456", "token=[REDACTED]"),
        ("api_token: xq7Lm2Np9Rt4Vw1Zy8", "api_token: [REDACTED]"),
        ('+    "client_secret": "Pp4Oo3Ii2Uu1Yy0Tt9",', '+    "client_secret": "[REDACTED]",'),
        # YAML values of keys' own shapes, ``_`` and ``/`` in them (a review found them sent)
        ("secret_key: sk_live_51Hx2abcdefGHIJklmn", "secret_key: [REDACTED]"),
        ("webhook_secret: whsec_MfKQ9x2LmPq7Rt", "webhook_secret: [REDACTED]"),
        ("refresh_token: 1//0gAbCdEf12345xyz", "refresh_token: [REDACTED]"),
        ("access_token: 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", "access_token: [REDACTED]"),
        ("supabase_token = sbp_0123456789abcdef0123456789abcdef", "supabase_token = [REDACTED]"),
    ],
)
def test_a_lower_case_secret_name_assigned_is_masked(text: str, masked: str) -> None:
    """``~/.aws/credentials`` and settings.py spell them in lower case: the values went
    into TASK_BRIEF.md and to the cloud Architect (a user audit)."""
    assert mask_text(text) == (masked, 1)


@pytest.mark.parametrize(
    "text",
    [
        "    token = tokens[i]",
        "    token=next_token,",
        "for token in tokens:",
        "secret: null",
        "token: ${{ secrets.GH_TOKEN }}",
        'error = "secret: not set"',
        'the secret = "to happiness"',
        "max_tokens=256",
        "access_key = settings.access_key",
        # annotations: a type, digits and all, is no key (a review: masked, and the code a
        # cloud model was shown with it)
        "        credentials: GoogleCredentials | None = None,",
        "    token: TextGenerationStreamOutputToken",
        "    token: Base64EncodedString | None = None",
        "token: user_id_12345_long",
    ],
)
def test_code_and_data_under_a_lower_case_secret_name_stay(text: str) -> None:
    assert mask_text(text) == (text, 0)
