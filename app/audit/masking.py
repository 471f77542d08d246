"""The one secret masker: every file Switchyard writes and every cloud request go through it.

What counts as a secret (DESIGN decision 3, GR-009):

- the current values of key-like environment variables (``*_API_KEY``, ``*_TOKEN``,
  ``*_SECRET``, ``*_PASSWORD`` …), wherever they appear, whatever they look like;
- the shapes keys commonly have: ``sk-…``, ``Bearer …``, ``x-api-key: …``, GitHub, Slack
  and Google keys, AWS access key ids (``AKIA…``/``ASIA…``), private key PEM blocks, JSON
  Web Tokens (``eyJ….….…``), GitLab personal access tokens (``glpat-`` and 20 or more),
  npm tokens (``npm_`` and 36 or more letters and digits), Hugging Face tokens (``hf_``
  and 34 or more);
- the password in a URL (``postgresql://user:PASSWORD@host/db``);
- ``.env``-style assignments to secret-named variables (``APP_SECRET=…``,
  ``export GITHUB_TOKEN=…``, ``DB_PASSWORD="…"``, ``DB_PASS=…``), key-like values
  assigned to such constants (``SECRET_KEY = "…"``, ``SECRET_TOKEN = Zx9vQ2mLk8Rt``), and
  a password given by name in any case (``password=…`` with a value no code spells,
  ``"password": "…"``);
- a quoted literal assigned to a name ending in ``pass`` (``passwd``, ``password``),
  ``secret``, ``token`` or ``api_key`` (``apikey``, ``api-key``), in any case
  (``db_pass: "…"``, ``DB_PASS = '…'``, ``"token": "…"``, ``apiToken := "…"``). The rule:
  the name ends there (``db_pass``, ``dbPass``; not ``bypass``, ``token_type``); at most
  one blank on each side of ``=``, ``:`` or ``:=``; then a quoted value on one line, six
  or more characters, no blank, a digit among them (``"s3cr3t!"``), and not a name
  (``"user_token_2"``, ``"app.v2"``), code (brackets: ``"Jobs[-1].JobId"``), a path
  (``/run/…``, ``~/…``, ``./…``), a template's slot (``${X}``, ``{x}``, ``%s``,
  ``<your-key>``), markup or a tokenizer's special token (``"[MASK]"``,
  ``"<extra_id_0>"``), nor an example's elided key (``"hf_..."``, ``"hf_***"``). It does
  not catch a value with no digit (``db_pass: "correct-horse!"``: only a ``password`` or
  ``passwd`` name takes any value), an unquoted one (``pass: s3cr3t!``: the rules above
  take key-like ones), one with a blank (a passphrase: ``password``/``passwd`` only), a
  name two or more blanks before its operator (aligned columns), a name and value
  escaped inside a JSON string (``\\"token\\": \\"…\\"``), nor a type between them
  (``token: str = "…"``). An opaque value that is no credential under such a name is
  masked too (``"NextToken": "…"``, a pagination token: its look cannot tell it from a
  key, as the lower-case rule masks ``next_token = "…"``).

What does not: ordinary code. A variable named ``token`` is not a secret, nor is
``password = os.environ[...]``, ``api_key: str`` or ``f(api_key=api_key)``. The
patterns are case-sensitive where case carries the meaning (``.env`` names are upper
case), an unquoted value must look like a key (a digit in it, no call or subscript), and
a quoted value assigned with spaces (Python) must not be a plain word.

Masking keeps the line structure: a masked value never removes a newline, so a masked
file, diff or chunk cites the same line numbers as the original. Each family of
patterns runs only when a cheap look at the text says it could match: one pass of an
Aho-Corasick automaton over the text's lowered bytes finds every family's markers at
once (:func:`families`), so a shape added with its markers adds no pass over the text.
The look was a ``str.find`` per marker, 30 markers and a lowered copy (~45 passes):
0.9 µs on "plan the fix", 71 µs on a 4 KB conversation turn; the automaton, with 510
needles, 0.5 and 25 µs (alternating trees, medians of 7). Which families it found is
all that runs after it: ``sk-`` in a text no longer runs the AWS or ``.env`` shapes.
The audit log's quick path (:mod:`app.audit.quick_redact`) looks for the same markers
in the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

import ahocorasick_rs

from app.audit.secret_forms import SecretForms, join_spans, mask_spans, secret_forms
from app.remembered import Remembered, digest

REDACTED = "[REDACTED]"
#: Bumped whenever what is masked changes: caches of masked text key on it.
MASKING_VERSION = "8"  # 8: JWT, glpat-, npm_, hf_; a quoted literal under pass/secret/token

SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")
SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_SECRET_KEY", "_PASSWORD", "_ACCESS_KEY")
_MIN_SECRET_LEN = 8  # shorter values ("1", "true") would redact ordinary words

# ── the cheap look ─────────────────────────────────────────────────────────────────────────
#: Substrings (lower case) one of which a text holds, lowered, before a case-insensitive
#: shape can match it.
_CI_SHAPE_MARKERS = (
    "sk-",
    "bearer",
    "apikey",
    "api_key",
    "api-key",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "aiza",
    "password",
    "passwd",
)
#: A name ending in ``pass``, ``secret`` or ``token`` and a quoted literal assigned to it,
#: as a text spells it lowered: the name's last word, its closing quote if any, a blank or
#: none, the operator, a blank or none, the value's opening quote (a JSON string's escaped
#: quote too, as the audit's quick look reads a line's JSON text). The names ending in an
#: api key's words or a password's are found by the markers above.
ASSIGN_NEEDLES = tuple(
    f"{word}{name_quote}{blank}{op}{after}{quote}"
    for word in ("pass", "secret", "token")
    for name_quote in ("", '"', "'", '\\"')
    for blank in ("", " ")
    for op in ("=", ":", ":=")
    for after in ("", " ")
    for quote in ('"', "'", '\\"')
)
#: Every substring (lower case) the look finds in any case.
CI_MARKERS = (*_CI_SHAPE_MARKERS, *ASSIGN_NEEDLES)

#: the lower-case secret names (an INI's aws_secret_access_key, a settings.py's
#: secret_key, a YAML's api_token: a user audit found them unmasked in briefs and cloud
#: prompts)
LOWER_NAME_MARKERS = ("secret", "token", "credentials", "private_key", "access_key")

#: Substrings (as written) one of which a text holds before a case-sensitive shape can.
_CS_SHAPE_MARKERS = (
    "AKIA",
    "ASIA",
    "PRIVATE KEY",
    "PRIVATE_KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "ACCESS_KEY",
    "CREDENTIALS",
    # ``DB_PASS=…`` (``PASS`` alone is in every test run's ``PASSED``)
    "PASS=",
    "PASS ",
    "PASS\t",
)
#: the prefixes (as written) of the keys their prefix names: a JSON Web Token's header
#: (``{"`` in base64), GitLab's personal access tokens, npm's and Hugging Face's tokens
KEY_PREFIXES = ("eyJ", "glpat-", "npm_", "hf_")
#: Every substring the look finds only as written.
CS_MARKERS = (*_CS_SHAPE_MARKERS, *KEY_PREFIXES)
#: what the lower-case names assigned end in, as a line's compact JSON spells them (a
#: quote escaped): the audit's quick look takes these for the lower-case markers, which
#: every call line holds (``secrets_masked``, ``tokens_in``)
LOWER_ASSIGN_NEEDLES = tuple(
    f"{tail}{quote}{blank}{op}"
    for tail in ("secret", "token", "credentials", "_key")
    for quote in ("", '\\"', "'")
    for blank in ("", " ")
    for op in ("=", ":")
)
#: the same, as a text spells them (a lower-case secret name assigned, as
#: :data:`_LOWER_SHAPE` needs it: the words alone, "max_tokens", "secrets", sent every
#: prompt holding them the slow way: 2 → 28 ms on 157 KB, a review)
_LOWER_ASSIGNED = tuple(
    f"{tail}{quote}{blank}{op}"
    for tail in ("secret", "token", "credentials", "_key")
    for quote in ("", '"', "'")
    for blank in ("", " ")
    for op in ("=", ":")
)

# The families of shapes, each run when the look found its markers in a text.
#: the case-insensitive shapes (``sk-…``, Bearer, api keys, passwords, GitHub …)
CI_SHAPES = 1
#: the case-sensitive ones (AWS ids, ``.env`` names assigned, private keys)
CS_SHAPES = 2
#: a lower-case secret name (one of the two bits), assigned (the other): both, or neither
_LOWER_NAME = 4
_LOWER_ASSIGN = 8
LOWER_SHAPE = _LOWER_NAME | _LOWER_ASSIGN
#: the keys a prefix names (JWT, GitLab, npm, Hugging Face)
PREFIXED = 16
#: a quoted literal assigned to a ``pass``/``secret``/``token``/``api_key`` name
ASSIGNED = 32
#: a URL's password (``://`` and ``@``: found by ``str.find``, not the automaton)
URL_PASSWORD = 64
ALL_FAMILIES = CI_SHAPES | CS_SHAPES | LOWER_SHAPE | PREFIXED | ASSIGNED | URL_PASSWORD

#: the only non-ASCII characters that an ignore-case pattern matches to ASCII letters
#: (İ ı ſ K): the bytes lowered miss what a shape's ``(?i)`` finds with one of them
_FOLDS_TO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")


class _Look:
    """Every family's markers in one pass over a text's lowered UTF-8 bytes: the
    ignore-case ones as they are, the exact ones lowered, a match of those compared with
    the bytes it was lowered from (as :class:`app.audit.quick_redact.Look` does)."""

    def __init__(self) -> None:
        needs: dict[bytes, list[tuple[bytes | None, int]]] = {}

        def add(needles: tuple[str, ...], family: int, exact: bool) -> None:
            for needle in needles:
                raw = needle.encode()
                needs.setdefault(raw.lower(), []).append((raw if exact else None, family))

        add(_CI_SHAPE_MARKERS, CI_SHAPES, exact=False)
        # an api key's or a password's name is a marker of both the CI shapes and a
        # literal assigned (``password := "…"``, which the password shape does not read)
        add(("apikey", "api_key", "api-key", "password", "passwd"), ASSIGNED, exact=False)
        add(ASSIGN_NEEDLES, ASSIGNED, exact=False)
        add(_CS_SHAPE_MARKERS, CS_SHAPES, exact=True)
        add(KEY_PREFIXES, PREFIXED, exact=True)
        add(LOWER_NAME_MARKERS, _LOWER_NAME, exact=True)
        add(_LOWER_ASSIGNED, _LOWER_ASSIGN, exact=True)
        self._needs = tuple(tuple(n) for n in needs.values())
        self._find = ahocorasick_rs.BytesAhoCorasick(
            list(needs), implementation=ahocorasick_rs.Implementation.DFA
        ).find_matches_as_indexes

    def families(self, text: str) -> int:
        if not text.isascii() and _FOLDS_TO_ASCII.search(text):
            return ALL_FAMILIES
        raw = text.encode("utf-8", "surrogatepass")
        found = 0
        needs = self._needs
        for index, start, end in self._find(raw.lower(), overlapping=True):
            for exact, family in needs[index]:
                if not found & family and (exact is None or raw[start:end] == exact):
                    found |= family
        if "://" in text and "@" in text:
            found |= URL_PASSWORD
        return found


_LOOK = _Look()


def families(text: str) -> int:
    """The families of shapes that can match ``text`` (0: none can, environment values
    aside): the bits above, a lower-case name counted only when it is assigned."""
    found = _LOOK.families(text)
    if found & LOWER_SHAPE and found & LOWER_SHAPE != LOWER_SHAPE:
        found &= ~LOWER_SHAPE
    return found


def maybe_secret(text: str) -> bool:
    """False only when no shape can match ``text`` (environment values aside)."""
    return families(text) != 0


# ── shapes ─────────────────────────────────────────────────────────────────────────────────
# Each shape names the secret group ``s``; only that span is replaced, so a reader still
# sees what was there (``x-api-key: [REDACTED]``). A check may turn a match down.
Check = Callable[["re.Match[str]"], bool]

_KEYLIKE = re.compile(r"[A-Za-z0-9._~+/=-]{8,}")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_PLAIN_WORD = re.compile(r"[a-z_.-]*")
# A name, not a key: X-API-Key, ANTHROPIC_API_KEY, access_token, your-api-key (words
# joined by - or _, no digit)
_NAME_LIKE = re.compile(r"[A-Za-z]+(?:[-_]+[A-Za-z]+)+")
# sk-toggleable__label-arrow is a CSS class: lower-case words joined by - or _
_WORDS = re.compile(r"[a-z]+(?:[-_]+[a-z]+)+")
_PLACEHOLDER_START = ("$", "%", "{", "<")


def _keylike(value: str) -> bool:
    """An unquoted value that reads like a key, not like code (``api_key``,
    ``os.environ[``, ``str)``, ``settings.API_KEY`` do not)."""
    if not _KEYLIKE.fullmatch(value) or _DOTTED_NAME.fullmatch(value):
        return False
    if any(c.isdigit() for c in value):
        return True
    mixed = any(c.isupper() for c in value) and any(c.islower() for c in value)
    return len(value) >= 16 and mixed and not any(c in "._" for c in value)


def _literal(value: str) -> bool:
    """A quoted value that can be a key: long enough, not a name or a template."""
    return (
        len(value) >= _MIN_SECRET_LEN
        and not value.startswith(_PLACEHOLDER_START)
        and not _NAME_LIKE.fullmatch(value)
    )


def _sk_value(m: re.Match[str]) -> bool:
    return not _WORDS.fullmatch(m.group("s")[3:])


def _api_key_value(m: re.Match[str]) -> bool:
    return _literal(m.group("s")) if m.group("q") else _keylike(m.group("s"))


#: what a documented URL or example holds where its password goes
_PASSWORD_WORDS = frozenset(("password", "passwd", "pass", "pwd", "pw", "secret", "token"))
#: a template's slot for a value: ``${DB_PASS}``, ``$(cat f)``, ``%(pw)s``, ``%s``,
#: ``$DB_PASS``, ``<password>``, ``{password}``, ``***``, ``xxxx``
_SLOT = re.compile(r"\$[{(]|%\(|%s$|\$[A-Z_][A-Z0-9_]*$|[<{]|[*xX]+$")
_HEX = re.compile(r"0[xX][0-9a-fA-F_]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_]*")


def _slot(value: str) -> bool:
    return _SLOT.match(value) is not None or value.lower() in _PASSWORD_WORDS


def _url_password(m: re.Match[str]) -> bool:
    """A URL's password, not a template's slot (``${DB_PASS}``, ``<password>``, ``***``,
    ``user:password@``)."""
    return not _slot(m.group("s"))


def _password_value(m: re.Match[str]) -> bool:
    """A password given by name: quoted, any literal but a slot (``"password": "…"``,
    ``password = "…"``); unquoted, a value no code spells (``--password=P@ssw0rd1``), not
    a name (``password=db_password``), a path (sudoers' ``NOPASSWD:/usr/bin/x``), a call,
    a subscript or a number literal."""
    value = m.group("s")
    if _slot(value) or value[:1] in " \t,);+":  # (a string's closing quote, not a value's)
        return False
    if m.group("q"):
        return len(value) >= 4 and not _NAME_LIKE.fullmatch(value)
    return (
        len(value) >= 6
        and value[0] != "/"
        and not any(c in value for c in "()[]")
        and not _IDENTIFIER.fullmatch(value)
        and not _DOTTED_NAME.fullmatch(value)
        and not _HEX.fullmatch(value)
    )


def _bearer_value(m: re.Match[str]) -> bool:
    value = m.group("s")
    return any(c.isdigit() for c in value) or "." in value or len(value) >= 20


def _assigned_value(m: re.Match[str]) -> bool:
    """``NAME=value`` (.env, shell) is a literal; ``NAME = value`` (code) only when quoted
    and more than a word or a name (``ACCESS_TOKEN = "access_token"`` names a field)."""
    value, quoted = m.group("s"), bool(m.group("q"))
    if value.startswith(_PLACEHOLDER_START) or any(c in value for c in "()[]"):
        return False
    if not m.group("sp"):
        return len(value) >= (4 if quoted else 6)
    if not quoted:
        # ``NAME = value`` unquoted is code but for a value no name is spelled like: key
        # characters with a digit, no ``_`` or ``.`` (an INI or YAML line, a pasted key),
        # not a number literal (``MAX_TOKEN = 0x7FFFFFFF``)
        return (
            _keylike(value)
            and not any(c in "_." for c in value)
            and not value.isdigit()
            and not _HEX.fullmatch(value)
        )
    return _literal(value) and not _PLAIN_WORD.fullmatch(value)


def _lower_assigned_value(m: re.Match[str]) -> bool:
    """``secret_key = "…"``, ``aws_secret_access_key = AKq…``, ``api_token: …``: lower-case
    names are code's and configs' alike, so spaced or not, a value is a key only when it
    is a quoted literal that is no word, or unquoted and key-like (``token = tokens[i]``,
    ``token=next_token,``, ``secret: null`` are code and data)."""
    value, quoted = m.group("s"), bool(m.group("q"))
    if value.startswith(_PLACEHOLDER_START) or any(c in value for c in "()[]{}"):
        return False
    if quoted:  # (no blank: ``secret = "to happiness"`` is prose)
        return _literal(value) and not _PLAIN_WORD.fullmatch(value) and " " not in value
    # unquoted: key characters with a digit and a letter, twelve or more (a type in an
    # annotation, ``credentials: GoogleCredentials``, has no digit: it was masked, and
    # the code a cloud model edits with it: a review; ``sk_live_51Hx…`` and
    # ``whsec_…`` hold ``_``, as keys of those shapes do)
    return (
        _LOWER_KEY.fullmatch(value) is not None
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and not _DOTTED_NAME.fullmatch(value)
        and not _HEX.fullmatch(value)
        and not (_CODE_NAME.fullmatch(value) and not _KEY_SEGMENT.search(value))
    )


#: an unquoted value under a lower-case secret name that can be a key
_LOWER_KEY = re.compile(r"[A-Za-z0-9_+/=-]{12,}")
#: a name as code spells one, digits and all: a type (``Base64EncodedString``), a
#: variable (``user_token_2``)
_CODE_NAME = re.compile(r"(?:[A-Z][a-z]+[0-9]*)+|[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
#: a snake name's part no name has: sixteen or more letters and digits, digits among them
#: (``shpat_1a2b…``, ``sbp_0123…``: keys with a prefix, a review)
_KEY_SEGMENT = re.compile(r"(?:^|_)(?=[a-z0-9]*[0-9])[a-z0-9]{16,}(?:_|$)")


_NOT_MASKED = r"(?!\[REDACTED\])"
_LOWER_SECRET_NAME = (
    r"(?:[a-z][a-z0-9]*_)*(?:secret|secret_key|token|private_key|access_key|credentials)"
)
_SECRET_NAME = (
    r"(?:[A-Z][A-Z0-9]*_)*"
    r"(?:SECRET|SECRET_KEY|TOKEN|AUTH_TOKEN|PASSWORD|PASSWD|PASS|PRIVATE_KEY|ACCESS_KEY"
    r"|CREDENTIALS)"
)

_CI_SHAPES: tuple[tuple[re.Pattern[str], Check | None], ...] = (
    # OpenAI/Anthropic/DeepSeek/Moonshot style: sk-…, sk-ant-…, sk-proj-…
    (re.compile(r"(?<![A-Za-z0-9_-])(?P<s>sk-[A-Za-z0-9_-]{16,})"), _sk_value),
    # a key shown in part, as a provider's 401 words it (its first 8 and last 4
    # characters, stars between): those characters still name the key
    (re.compile(r"(?<![A-Za-z0-9_-])(?P<s>sk-[A-Za-z0-9_-]*\*{3,}[A-Za-z0-9_-]*)"), None),
    # the token ends before a full stop that ends the sentence
    (
        re.compile(r"(?i)\bbearer\s+(?P<s>[A-Za-z0-9._~+/-]{7,}[A-Za-z0-9_~+/-]=*)"),
        _bearer_value,
    ),
    # x-api-key, api_key=…, OPENAI_API_KEY=…, "api_key": "…": the name stays as it was.
    (
        re.compile(
            r"(?i)api[_-]?key[\"']?\s*[:=]\s*(?P<q>[\"']?)" + _NOT_MASKED + r"(?P<s>[^\s\"',;&}]+)"
        ),
        _api_key_value,
    ),
    # password=…, "passwd": "…", Password: '…' (not sudoers' NOPASSWD): a quoted value runs
    # to its own closing quote (a passphrase has spaces, and may hold the other quote)
    (
        re.compile(
            r"(?i)(?<!no)passw(?:or)?d[\"']?\s*[:=]\s*(?P<q>[\"'])?"
            + _NOT_MASKED
            + r"(?P<s>(?(q)(?:(?!(?P=q))[^\r\n])+|[^\s\"',;&}]+))(?(q)(?P=q))"
        ),
        _password_value,
    ),
    # GitHub, Slack and Google key shapes, which show up in tool output.
    (re.compile(r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), None),
    (re.compile(r"\b(?P<s>xox[abprs]-[A-Za-z0-9-]{10,})"), None),
    (re.compile(r"\b(?P<s>AIza[0-9A-Za-z_-]{35})"), None),
)
# scheme://user:PASSWORD@host (user may be empty: redis://:PASSWORD@host): only the
# password goes. The scheme is at most 32 characters and starts where no scheme character
# stands before it: ``\b[a-z][a-z0-9+.-]*`` began again after every ``.`` of a long run
# and rescanned it (a 32 KB text took 2 s).
_URL_PASSWORD = (
    re.compile(
        r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,31}://[^\s/:@\"'<>\\]*:"
        + _NOT_MASKED
        + r"(?P<s>[^\s/@\"'<>\\]+)@"
    ),
    _url_password,
)
_CS_SHAPES: tuple[tuple[re.Pattern[str], Check | None], ...] = (
    # AWS access key ids (long-lived AKIA…, temporary ASIA…)
    (re.compile(r"\b(?P<s>(?:AKIA|ASIA)[0-9A-Z]{16})\b"), None),
    # APP_SECRET=…, export GH_TOKEN=…, +DB_PASSWORD="…" (a diff line), SECRET_KEY = "…";
    # at a line start (also after a JSON-escaped newline) or after a blank or ``;``.
    (
        re.compile(
            r"(?m)(?:^|(?<=\\n)|(?<=[\s;]))[+-]?(?:export[ \t]+)?"
            + _SECRET_NAME
            + r"(?P<sp>[ \t]*)=[ \t]*(?P<q>[\"'])?"
            + _NOT_MASKED
            + r"(?P<s>(?(q)[^\"'\r\n]+|[^\s\"'#;]+))"
        ),
        _assigned_value,
    ),
)

# the lower-case names, with ``=`` or ``:`` (INI, YAML, code), a quoted name too
_LOWER_SHAPE: tuple[re.Pattern[str], Check | None] = (
    re.compile(
        r"(?m)(?:^|(?<=\\n)|(?<=[\s;]))[+-]?(?:export[ \t]+)?[\"']?"
        + _LOWER_SECRET_NAME
        + r"[\"']?(?P<sp> ?)[=:][ \t]*(?P<q>[\"'])?"
        + _NOT_MASKED
        + r"(?P<s>(?(q)[^\"'\r\n]+|[^\s\"'#;,]+))"
    ),
    _lower_assigned_value,
)

# Keys their prefix names, one pattern (a pass over the text, when the look found a
# prefix): a JSON Web Token (its header and payload base64url, the header's JSON starting
# ``{"``; its signature, empty when unsigned), GitLab's personal access token, npm's and
# Hugging Face's tokens. Each starts where no key character stands before it.
_PREFIXED_KEY: tuple[re.Pattern[str], Check | None] = (
    re.compile(
        r"(?<![A-Za-z0-9_-])(?P<s>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
        r"|glpat-[A-Za-z0-9_-]{20,}|npm_[A-Za-z0-9]{36,}(?![A-Za-z0-9_])"
        r"|hf_[A-Za-z0-9]{34,}(?![A-Za-z0-9_]))"
    ),
    None,
)


#: what a quoted value under a secret-looking name does not start with: a template's
#: slot or a tokenizer's special token (``${X}``, ``%s``, ``{x}``, ``<mask>``, ``[MASK]``),
#: a path (``/run/…``, ``~/…``, ``./…``), a colour, or a string's closing quote seen as
#: a value's opening one (``prompt="Token: ", default="x"``)
_NOT_A_LITERAL_START = frozenset("$%{<[/~.#,);+")
#: what an example elides a key with (``"hf_..."``, ``"hf_***"``)
_ELIDED = ("...", "\u2026", "***")


def _assigned_literal(m: re.Match[str]) -> bool:
    """A quoted literal under a name ending in ``pass``, ``password``, ``secret``,
    ``token`` or ``api_key`` (the module docstring's rule): six or more characters, no
    blank, a digit among them; not a name (``"user_token_2"``, ``"app.v2"``), code (a
    call, a subscript: brackets), a path, a slot, markup or a tokenizer's special token
    (``"<extra_id_0>"``), nor an example's elided key. And the word is the name's last
    and starts a word of it: after no letter or digit (``db_pass``, ``DB-PASS``,
    ``self.token``), or capitalised after a lower-case letter or a digit (``dbPass``,
    ``openaiApiKey``); never inside a word (``bypass``, ``BYPASS``)."""
    value = m.group("s")
    if len(value) < 6 or value[0] in _NOT_A_LITERAL_START or _slot(value):
        return False
    if not any(c.isdigit() for c in value) or any(c in value for c in "()[]{}"):
        return False  # (a word, or code: ``"Jobs[-1].JobId"``)
    if "<" in value and ">" in value:
        return False
    if any(e in value for e in _ELIDED) or _DOTTED_NAME.fullmatch(value):
        return False
    if _CODE_NAME.fullmatch(value) and not _KEY_SEGMENT.search(value):
        return False
    start = m.start("k")
    if start == 0:
        return True
    before = m.string[start - 1]
    if not before.isalnum():
        return True
    return m.group("k")[0].isupper() and (before.islower() or before.isdigit())


# ``db_pass: "…"``, ``TOKEN = '…'``, ``"api_key": "…"``, ``secret := "…"``: the word and
# what may follow it as :data:`ASSIGN_NEEDLES` spell it (the look finds no other), the
# value to its own closing quote; the check says whether the word ends a name.
_ASSIGNED_LITERAL: tuple[re.Pattern[str], Check | None] = (
    re.compile(
        r"(?P<k>(?i:pass(?:w(?:or)?d)?|secret|token|api[_-]?key))[\"']? ?(?::=|[:=]) ?(?P<q>[\"'])"
        + _NOT_MASKED
        + r"(?P<s>(?:(?!(?P=q))\S)+)(?P=q)"
    ),
    _assigned_literal,
)

# Private keys: the BEGIN/END lines stay, every line between them is masked (keeping a
# diff's leading +/-/space), and so are the lines next to a marker whose partner is not in
# the text (a key cut by a chunk, a log tail or a diff hunk).
_PEM_BLOCK = re.compile(
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)(.*?)(-----END [A-Z0-9 ]*PRIVATE KEY"
    r"(?: BLOCK)?-----)",
    re.S,
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
# a body line (base64) after an optional diff mark; a header (Proc-Type: …) or a blank
_PEM_LINE = re.compile(r"([ \t]*)([A-Za-z0-9+/=]+)([ \t]*\r?)")
_PEM_HEADER = re.compile(r"[+\- ]?[ \t]*(?:[A-Za-z-]+:[^\n]*)?[ \t]*\r?")
_PEM_HEADERS = re.compile(r"(?m)^[+\- ]?[ \t]*[A-Za-z-]+: [^\n]*$")
_PEM_BODY_CHARS = re.compile(r"[A-Za-z0-9+/=\s\\-]*")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}")
#: a body's lines are this long (64 in PEM, 70 in OpenSSH keys) but for its last
_PEM_FULL_LINE = 40


# ── environment ────────────────────────────────────────────────────────────────────────────


def secret_env_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Current values of the key-like environment variables, longest first."""
    if environ is None:
        return _process_env_values()
    return _env_values(environ)


#: key variables a loaded policy names (``providers.X.api_key_env``) beyond the usual ones
_policy_key_names: frozenset[str] = frozenset()


def also_secret(names: Iterable[str]) -> None:
    """Mask the values of ``names`` too, from now on in this process: the key variables a
    policy names (``api_key_env = "KIMI_KEY"`` went unmasked into the audit, the evidence
    and another provider's request, as it matches none of :data:`SECRET_SUFFIXES`)."""
    global _policy_key_names
    _policy_key_names = _policy_key_names | frozenset(names)


def _env_values(env: Mapping[str, str]) -> tuple[str, ...]:
    # Names first, values only for the few that match.
    extra = _policy_key_names
    names = [n for n in env if n.endswith(SECRET_SUFFIXES) or n in SECRET_ENV_VARS or n in extra]
    values = {v for v in (env[n] for n in names) if len(v) >= _MIN_SECRET_LEN}
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


#: the key names and the environment the values were last read from, and those values
_env_seen: tuple[frozenset[str], dict[Any, Any], tuple[str, ...]] | None = None


def _process_env_values() -> tuple[str, ...]:
    """``_env_values(os.environ)``, computed again only when the environment has changed
    (every audit line and every cloud request asks: one comparison of two dicts in C)."""
    global _env_seen
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return _env_values(os.environ)
    seen = _env_seen
    if seen is None or seen[0] is not _policy_key_names or seen[1] != data:
        seen = _env_seen = (_policy_key_names, dict(data), _env_values(os.environ))
    return seen[2]


@lru_cache(maxsize=8)
def env_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    # Keyed on the values themselves, so a changed environment compiles a new pattern.
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in values))


def masking_fingerprint(environ: Mapping[str, str] | None = None) -> str:
    """Changes when what would be masked changes (the patterns' version, the secret
    values): a cache of masked text made under another fingerprint must be rebuilt.

    A short hash of the values, never the values; it can only confirm a guess of every
    secret at once, which a guesser holding them does not need.
    """
    blob = "\0".join(("switchyard-masking", MASKING_VERSION, *secret_env_values(environ)))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# ── the masker ─────────────────────────────────────────────────────────────────────────────


def _keep_lines(secret: str) -> str:
    """The placeholder for ``secret``, with as many line breaks as it had."""
    return REDACTED + "\n" * secret.count("\n")


#: long texts lately masked, by the digests of the environment pattern they were masked
#: with (it spells the secret values: never kept itself) and of the text: the masked text
#: (None when nothing in it was) and how many secrets it held (app.remembered: a text
#: with a secret in it is never kept)
_MASKED: Remembered[tuple[bytes, bytes], tuple[str | None, int]] = Remembered(
    min_chars=128, max_entries=65536, max_chars=8 * 2**20
)


class Masker:
    """Masks text and JSON-like values with one environment snapshot; counts what it did.

    ``count`` is the number of secrets replaced (a private key block counts once).
    """

    def __init__(
        self,
        env: re.Pattern[str] | None = None,
        digest_of: Callable[[str], bytes] = digest,
        forms: SecretForms | None = None,
    ) -> None:
        self.env = env
        #: the same values in their other forms (in part, another case, escaped, base64)
        self.forms = forms
        self.count = 0
        #: what a long text is remembered by (a request's Digests: its count and its hash
        #: digest the same texts)
        self.digest_of = digest_of
        self._env_digest: bytes | None = None

    def _env_key(self) -> bytes:
        """The digest of the environment pattern, made once per masker (not per text)."""
        if self._env_digest is None:
            self._env_digest = b""
            if self.env is not None:
                # hashed here, not by ``digest_of``: a request's Digests would hold the
                # pattern, which spells the secret values, for as long as the request lasts
                spelled = f"{self.env.flags} {self.env.pattern}"
                self._env_digest = hashlib.sha256(spelled.encode(errors="surrogatepass")).digest()
        return self._env_digest

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, digest_of: Callable[[str], bytes] = digest
    ) -> Masker:
        values = secret_env_values(environ)
        return cls(env_pattern(values), digest_of, secret_forms(values) if values else None)

    # text ────────────────────────────────────────────────────────────────────────────────
    def text(self, text: str) -> str:
        if not text:  # (a message's reasoning, most often)
            return text
        if len(text) < _MASKED.min_chars:
            return self._text(text)
        # A long text masked lately (a conversation sent again) by the same environment's
        # values: its result and how many it masked, as working them out again gives.
        env = self._env_digest
        key = (self._env_key() if env is None else env, self.digest_of(text))
        hit = _MASKED.get(key)
        if hit is None:
            before = self.count
            masked = self._text(text)
            found = self.count - before
            kept = masked if found else None
            _MASKED.put(key, (kept, found), len(masked) if found else 0)
            return masked
        self.count += hit[1]
        return text if hit[0] is None else hit[0]

    def _text(self, text: str) -> str:
        # Every span found on the text as it came, masked once: the environment's values
        # whole, the shapes' values, each key-like value's runs (in part, in another case
        # or spelling). Masked one after the other, each left the next a text it could no
        # longer read: a shape's value stops at ``&`` or ``;`` (a value holding one lost
        # only its start), and a value masked inside another key left that key's ends,
        # too short for its shape (a review, twice).
        spans: list[tuple[int, int]] = []
        if self.env is not None:
            spans += [m.span() for m in self.env.finditer(text)]
        shaped = families(text)
        if shaped:
            spans += self._shape_spans(text, shaped)
        if self.forms is not None:
            spans += self.forms.spans(text)
        if spans:
            joined = join_spans(spans)
            self.count += len(joined)
            text = mask_spans(text, joined, REDACTED)
        if shaped & CS_SHAPES and "PRIVATE KEY" in text:
            text = self._pem(text)
        return text

    def _shape_spans(self, text: str, shaped: int) -> list[tuple[int, int]]:
        """Where each shape of the ``shaped`` families stands in ``text`` (its ``s``
        group), its check held."""
        found: list[tuple[int, int]] = []

        def add(pattern: re.Pattern[str], check: Check | None) -> None:
            for m in pattern.finditer(text):
                if check is None or check(m):
                    found.append(m.span("s"))

        if shaped & CI_SHAPES:
            for pattern, check in _CI_SHAPES:
                add(pattern, check)
        if shaped & URL_PASSWORD:
            add(*_URL_PASSWORD)
        if shaped & CS_SHAPES:
            for pattern, check in _CS_SHAPES:
                add(pattern, check)
        if shaped & LOWER_SHAPE:
            add(*_LOWER_SHAPE)
        if shaped & PREFIXED:
            add(*_PREFIXED_KEY)
        if shaped & ASSIGNED:
            add(*_ASSIGNED_LITERAL)
        return found

    def _pem(self, text: str) -> str:
        def block(m: re.Match[str]) -> str:
            if not _is_pem_body(m.group(2)):
                return m.group(0)  # code that names the markers, not a key
            self.count += 1
            mark = _diff_mark(text[text.rfind("\n", 0, m.start()) + 1 : m.start()])
            body = "\n".join(_masked_line(line, mark) for line in m.group(2).split("\n"))
            return m.group(1) + body + m.group(3)

        text = _PEM_BLOCK.sub(block, text)
        lines = text.split("\n")
        for i, line in enumerate(lines):
            # a lone marker on a line of its own, or ending (starting) the line that opens
            # (closes) a string: KEY = """-----BEGIN …; code naming a marker is neither
            begin, end = _PEM_BEGIN.search(line), _PEM_END.search(line)
            if begin and not end and not line[begin.end() :].strip():
                self._pem_run(lines, range(i + 1, len(lines)), _diff_mark(line[: begin.start()]))
            elif end and not begin and not line[: end.start()].strip(" \t+-"):
                self._pem_run(lines, range(i - 1, -1, -1), _diff_mark(line[: end.start()]))
        return "\n".join(lines)

    def _pem_run(self, lines: list[str], order: range, mark: str) -> None:
        """Mask the body lines next to a lone marker, walking away from it.

        The body is full-length lines with one shorter line last: walking forward from a
        BEGIN (past headers and blanks), the run ends after its first short line;
        walking back from an END, only the line next to it may be short.
        """
        forward = order.step > 0
        masked, started = False, False
        for j in order:
            line = lines[j][len(mark) :] if mark and lines[j].startswith(mark) else lines[j]
            m = _PEM_LINE.fullmatch(line)
            if m is None:
                if forward and not started and _PEM_HEADER.fullmatch(lines[j]):
                    continue  # headers and the blank line before the body
                break
            full = len(m.group(2)) >= _PEM_FULL_LINE
            if not (full or (forward or not started)):
                break
            lines[j] = _masked_line(lines[j], mark)
            masked = started = True
            if forward and not full:
                break
        if masked:
            self.count += 1

    # values ──────────────────────────────────────────────────────────────────────────────
    def walk(self, obj: Any) -> Any:
        """A copy of ``obj`` (str/dict/list/tuple, nested) with every secret replaced.

        Tuples come back as lists (audit lines are JSON); numbers, None and bools pass
        through. A string under a key named like a secret (``password``, ``api_key``,
        ``Authorization`` …) is replaced whole.
        """
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            for key, value in obj.items():
                clean_key = self.text(key) if isinstance(key, str) else key
                if isinstance(key, str) and isinstance(value, str) and SECRET_KEY.match(key):
                    if value and value != REDACTED:
                        self.count += 1
                    out[clean_key] = REDACTED if value else value
                else:
                    out[clean_key] = self.walk(value)
            return out
        if isinstance(obj, list | tuple):
            return [self.walk(v) for v in obj]
        return obj


def _is_pem_body(body: str) -> bool:
    """Base64 lines (and headers, blanks, diff marks, escaped newlines), some key in them."""
    rest = _PEM_HEADERS.sub("", body)
    return bool(_PEM_BODY_CHARS.fullmatch(rest)) and len(_BASE64_RUN.findall(rest)) > 0


def _diff_mark(prefix: str) -> str:
    """The diff mark (+ or -) before a marker, when its line is a diff line."""
    return prefix[:1] if prefix[:1] in ("+", "-") and not prefix[1:].strip() else ""


def _masked_line(line: str, mark: str) -> str:
    """A body line masked; its indentation kept, and the diff mark its marker line has."""
    marked = bool(mark) and line.startswith(mark)
    rest = line[len(mark) :] if marked else line
    if not rest.strip(" \t\r"):
        return line  # a blank line (or a one-line body's nothing)
    lead = rest[: len(rest) - len(rest.lstrip(" \t"))]
    cr = "\r" if line.endswith("\r") else ""
    return (mark if marked else "") + lead + REDACTED + cr


# Mapping keys whose string value is a secret whatever it looks like.
SECRET_KEY = re.compile(
    r"(?i)^(authorization|proxy-authorization|x-api-key|api[_-]?key|[a-z0-9_]*_api_key|"
    r"password|secret|client_secret|access_token|refresh_token|auth_token|id_token)$"
)


def mask_text(text: str) -> tuple[str, int]:
    """``text`` with every secret masked (this environment's), and how many there were."""
    masker = Masker.from_environment()
    return masker.text(text), masker.count


def mask_value(obj: Any) -> tuple[Any, int]:
    """:meth:`Masker.walk` with this environment's secrets, and how many there were."""
    masker = Masker.from_environment()
    return masker.walk(obj), masker.count


def mask_bytes(data: bytes) -> bytes:
    """Bytes as a file holds them: decoded as UTF-8 (undecodable bytes kept as they
    were), masked, encoded back."""
    text = data.decode("utf-8", "surrogateescape")
    masked, n = mask_text(text)
    return masked.encode("utf-8", "surrogateescape") if n else data
