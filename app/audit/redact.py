"""Keep secrets out of audit lines: every field is redacted before it is hashed and stored.

Two nets: the current values of key-like environment variables (exact matches, wherever
they appear), and the shapes keys commonly have (``sk-…``, ``Bearer …``, ``x-api-key: …``)
for keys that never passed through the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"

SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")
_SECRET_SUFFIXES = ("_API_KEY", "_TOKEN")
_MIN_SECRET_LEN = 8  # shorter values ("1", "true") would redact ordinary words

# Shapes: (pattern, replacement). Prefixes are kept so a reader still sees what was there.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # OpenAI/Anthropic/DeepSeek/Moonshot style: sk-…, sk-ant-…, sk-proj-…
    (re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{8,}=*"), rf"\1{REDACTED}"),
    (
        # Also x-api-key and OPENAI_API_KEY=…: the prefix before "api" stays as it was.
        re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+"),
        rf"\1{REDACTED}",
    ),
    # GitHub, Slack and Google key shapes, which show up in tool output.
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), REDACTED),
)

# Cheap first look: most strings contain none of these, so the substitutions are skipped.
_MAYBE_SHAPED = re.compile(r"(?i)sk-|bearer|api[_-]?key|gh[pousr]_|github_pat_|xox|AIza")

# Mapping keys whose string value is a secret whatever it looks like.
_SECRET_KEY = re.compile(
    r"(?i)^(authorization|proxy-authorization|x-api-key|api[_-]?key|[a-z0-9_]*_api_key|"
    r"password|secret|client_secret|access_token|refresh_token|auth_token|id_token)$"
)


def secret_env_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Current values of the key-like environment variables, longest first."""
    env = os.environ if environ is None else environ
    # Names first, values only for the few that match: this runs on every append.
    names = [n for n in env if n.endswith(_SECRET_SUFFIXES) or n in SECRET_ENV_VARS]
    values = {v for v in (env[n] for n in names) if len(v) >= _MIN_SECRET_LEN}
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


@lru_cache(maxsize=8)
def _env_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    # Keyed on the values themselves, so a changed environment compiles a new pattern.
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in values))


def redact_text(text: str, env_pattern: re.Pattern[str] | None = None) -> str:
    if env_pattern is not None:
        text = env_pattern.sub(REDACTED, text)
    if _MAYBE_SHAPED.search(text):
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
    return text


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (str/dict/list/tuple, nested) with every secret replaced.

    Tuples come back as lists (audit lines are JSON); numbers, None and bools pass through.
    """
    return _walk(obj, _env_pattern(secret_env_values()))


def _walk(obj: Any, env: re.Pattern[str] | None) -> Any:
    if isinstance(obj, str):
        return redact_text(obj, env)
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            clean_key = redact_text(key, env) if isinstance(key, str) else key
            if isinstance(key, str) and isinstance(value, str) and _SECRET_KEY.match(key):
                out[clean_key] = REDACTED if value else value
            else:
                out[clean_key] = _walk(value, env)
        return out
    if isinstance(obj, list | tuple):
        return [_walk(v, env) for v in obj]
    return obj
