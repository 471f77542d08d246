"""Load and validate a policy file. Every problem becomes ``FILE:LINE: field.path: message``.

Only :class:`~app.errors.PolicyError` ever escapes :func:`load_policy`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from app.audit.masking import SECRET_ENV_VARS, also_secret
from app.errors import PolicyError
from app.hosts import (
    PUBLIC_RUNTIME,
    host_port,
    is_loopback_name,
    is_provider_host,
    parse_host_port,
    public_runtime,
)
from app.policy.lines import key_lines, line_for
from app.policy.schema import (
    FLAG_SIGNALS,
    NUMERIC_SIGNALS,
    UNIT_SIGNALS,
    Model,
    Policy,
    Provider,
    Runtime,
)
from app.resources import default_policy_path
from app.toml_errors import one_line as _one_line
from app.toml_errors import toml_error

SUPPORTED_MAJOR = 1
SEED_ROLES = (
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
SEED_GUARDRAILS = tuple(f"GR-{n:03d}" for n in range(1, 14))
RETRY_KINDS = (
    "rate_limited",
    "server_error",
    "timeout",
    "connect",
    "context_length",
    "bad_output",
    "auth",
)

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: Path
    warnings: list[str] = field(default_factory=list)


#: every loopback name, as one host (where the runtimes serve, compared)
_LOOPBACK = "loopback"


def _fmt(path: Path, line: int | None, keypath: KeyPath, message: str, raw: Any = None) -> str:
    where = f"{path}:{line}" if line is not None else f"{path}"
    dotted = named_path(keypath, raw) if keypath else "(top level)"
    return f"{where}: {_one_line(dotted)}: {_one_line(message)}"


_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")


def named_path(keypath: KeyPath, raw: Any = None) -> str:
    """``keypath`` dotted, with an item of a list of id'd tables (``[[triggers]]``,
    ``[[high_risk.rules]]``, ``[[resolutions]]``) named by its id where ``raw`` (the
    parsed TOML) gives it one, unique in its list: ``triggers[architect_low_confidence]
    .threshold``, where ``triggers.0.threshold`` sent the reader counting tables. By its
    index otherwise, and where the id itself is the key in question."""
    out = ""
    node = raw
    for i, part in enumerate(keypath):
        name = None
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            item = node[part]
            about_id = i + 1 < len(keypath) and keypath[i + 1] == "id"
            ident = item.get("id") if isinstance(item, dict) else None
            if (
                not about_id
                and isinstance(ident, str)
                and _PLAIN_ID.match(ident)
                and sum(isinstance(x, dict) and x.get("id") == ident for x in node) == 1
            ):
                name = f"[{ident}]"
        if name is not None:
            out += name
        else:
            out += ("." if out else "") + str(part)
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return out


def _pydantic_message(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    msg = str(err.get("msg", "invalid value"))
    if "input" in err and not isinstance(err["input"], dict | list):
        return f"{msg} (got {err['input']!r})"
    return msg


#: the largest policy file read (the shipped one is ~40 KB)
MAX_POLICY_BYTES = 4 << 20


def load_policy(path: Path | str | None = None, *, source: str | None = None) -> LoadedPolicy:
    """Read, parse, validate and cross-check the policy at ``path`` (default: shipped one).

    ``source`` says where ``path`` was given (``SWITCHYARD_POLICY``, ``--policy``, the
    config file and line): a file that cannot be read names it, since the path alone
    did not say why Switchyard looked there."""
    file = Path(path) if path is not None else default_policy_path()
    given = f" (the path is from {source})" if source else ""
    try:
        with file.open("rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise PolicyError([f"{file}: cannot read policy: no such file{given}"]) from None
    except IsADirectoryError:
        raise PolicyError([f"{file}: cannot read policy: is a directory{given}"]) from None
    except OSError as exc:
        why = exc.strerror or exc
        raise PolicyError([f"{file}: cannot read policy: {why}{given}"]) from None
    if len(data) > MAX_POLICY_BYTES:  # 300 MB took 6.6 s and 1.5 GB, and was "ok"
        raise PolicyError([f"{file}: larger than a policy ({MAX_POLICY_BYTES:,} bytes at most)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError([f"{file}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    # empty: it was one "missing required key" line per section of the policy (21)
    if not text.removeprefix("\ufeff").strip():
        raise PolicyError([f"{file}: the policy file is empty{given}"])
    loaded = parse_policy(text, file)
    loaded.warnings.extend(
        f"{file}: triggers: {missing}" for missing in _seed_triggers_missing(loaded.policy)
    )
    # the keys this policy's providers read are secrets wherever the masker looks
    providers = loaded.policy.providers.values()
    also_secret(p.api_key_env for p in providers if p.api_key_env)
    return loaded


#: §3's triggers (MODEL-POLICY.md), as the shipped policy spells them: (id, role, what
#: it fires on). A fixed list, not read from the shipped file: a source checkout edits
#: that file in place, and a trigger taken out of it was then the baseline's too (a
#: review).
SEED_TRIGGERS: tuple[tuple[str, str, str], ...] = (
    ("architect_low_confidence", "architect", "confidence lt 0.75"),
    ("architect_scope_large_steps", "architect", "plan_steps gt 8"),
    ("architect_scope_large_files", "architect", "files_touched gt 12"),
    ("architect_ambiguous", "architect", "open_questions ge 2"),
    ("implementer_failed_loops", "implementer", "failed_loops ge 2"),
    ("implementer_low_self_check", "implementer", "self_check_confidence lt 0.5"),
    ("implementer_high_coupling", "implementer", "modules_touched ge 4"),
    ("implementer_tool_heavy", "implementer", "tool_calls ge 20"),
    ("librarian_tool_heavy", "librarian", "tool_heavy is_true"),
    ("librarian_context", "librarian", "context_estimate gt 100000"),
    ("librarian_contradictions", "librarian", "contradictions_detected is_true"),
    ("librarian_full_sweep", "librarian", "full_sweep is_true"),
    ("librarian_low_synth_confidence", "librarian", "local_synth_confidence lt 0.6"),
    ("implementer_user_request", "implementer", "user_request is_true"),
    ("user_request", "*", "user_request is_true"),
)


def _seed_triggers_missing(p: Policy) -> list[str]:
    """§3's triggers this policy has not (by id): the policy file's own cross-checks
    cannot see that a trigger the seed requires was taken out, and ``policy check`` said
    "ok, policy 1.0.0" of one without the Architect's (a user audit)."""
    have = {t.id for t in p.triggers}
    return [
        f"§3's trigger {tid} ({role}: {fires}) is not in this policy: {role} never escalates on it"
        for tid, role, fires in SEED_TRIGGERS
        if tid not in have and (role == "*" or role in p.roles)
    ]


def parse_policy(text: str, file: Path) -> LoadedPolicy:
    text = text.removeprefix("\ufeff")  # a byte order mark some editors write
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([toml_error(file, text, str(exc))]) from None
    except (RecursionError, ValueError) as exc:
        # tomllib's own limits: nesting too deep, an integer too long to convert
        reason = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
        raise PolicyError([f"{file}: toml syntax: {_one_line(reason)}"]) from None

    lines = key_lines(text)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc: KeyPath = tuple(err["loc"])
            message = _pydantic_message(err)
            problems.append(_fmt(file, line_for(lines, loc), loc, message, raw))
        raise PolicyError(problems) from None

    errors, warnings = cross_check(policy)
    if errors:
        raise PolicyError([_fmt(file, line_for(lines, p), p, m, raw) for p, m in errors])
    return LoadedPolicy(
        policy=policy,
        path=file,
        warnings=[_fmt(file, line_for(lines, p), p, m, raw) for p, m in warnings],
    )


Finding = tuple[KeyPath, str]


def _listed_twice(p: Policy, names: list[str]) -> str | None:
    """The first model ``names`` lists twice (an alias and its model count as one)."""
    seen: dict[str, str] = {}
    for name in names:
        model = p.resolve(name)
        if model in seen:
            first = seen[model]
            return repr(name) if first == name else f"{model!r} (as {first!r} and {name!r})"
        seen[model] = name
    return None


def cross_check(p: Policy) -> tuple[list[Finding], list[Finding]]:
    """References and ranges a schema cannot express. Returns (errors, warnings)."""
    errors: list[Finding] = []
    warnings: list[Finding] = []
    err = errors.append

    major = p.policy.version.split(".")[0]
    if len(major) > 6 or int(major) != SUPPORTED_MAJOR:  # ASCII digits (schema pattern)
        err(
            (
                ("policy", "version"),
                f"version {p.policy.version} not supported (this Switchyard reads "
                f"{SUPPORTED_MAJOR}.x)",
            )
        )

    def known(name: str) -> bool:
        return p.resolve(name) in p.models

    for alias, target in p.aliases.items():
        if alias in p.models:
            err((("aliases", alias), "alias shadows a catalog model id"))
        if target in p.aliases:
            err((("aliases", alias), f"alias points to the alias {target!r}: name a model"))
        elif target not in p.models:
            err((("aliases", alias), f"alias points to unknown model {target!r}"))

    for name in p.providers:
        prov = p.providers[name]
        if name != "local" and (not prov.base_url or not prov.api_key_env):
            err((("providers", name), "a cloud provider needs base_url and api_key_env"))
        elif name != "local":
            _check_provider(name, prov, err, warnings)
    for name in p.budget.provider_day_usd:
        if name not in p.providers:
            err((("budget", "provider_day_usd", name), f"unknown provider {name!r}"))

    for mid, model in p.models.items():
        if model.provider not in p.providers:
            err((("models", mid, "provider"), f"unknown provider {model.provider!r}"))
        for only in model.escalation_only_roles:
            if only not in p.roles:
                err((("models", mid, "escalation_only_roles"), f"unknown role {only!r}"))
        if model.speed_variant is not None and not known(model.speed_variant):
            err((("models", mid, "speed_variant"), f"unknown model {model.speed_variant!r}"))
        if model.provider == "local" and (
            model.price_in_usd_per_mtok
            or model.price_out_usd_per_mtok
            or model.price_cache_read_usd_per_mtok is not None
            or model.price_cache_write_usd_per_mtok is not None
        ):
            err((("models", mid), "local models cost 0 (GR-011 never blocks them)"))
        elif model.provider != "local":
            # an unpriced cloud model cost $0 and passed every cap (GR-011)
            if not model.price_in_usd_per_mtok:
                err((("models", mid, "price_in_usd_per_mtok"), _UNPRICED))
            if not model.price_out_usd_per_mtok and model.embedding_dim is None:
                err((("models", mid, "price_out_usd_per_mtok"), _UNPRICED))
            _check_cache_prices(mid, model, p.providers.get(model.provider), warnings)

    for missing in sorted(set(SEED_ROLES) - set(p.roles)):
        err((("roles",), f"the seed's role {missing!r} is missing"))

    for rid, role in p.roles.items():
        base: KeyPath = ("roles", rid)
        if role.kind in ("llm", "embedding", "vision") and role.default is None:
            err(((*base, "default"), "this role needs a default model"))
        names = [("default", role.default)] if role.default else []
        names += [("alternatives", a) for a in role.alternatives]
        names += [("fallback", f) for f in role.fallback]
        if role.local_stand_in:
            names.append(("local_stand_in", role.local_stand_in))
        for key, name in names:
            if name in p.aliases and not known(name):
                err(((*base, key), f"{name!r} is an alias that names no model"))
            elif not known(name):
                err(((*base, key), f"unknown model {name!r} (not in [models] or [aliases])"))
        if any(not known(n) for _, n in names):
            continue
        if role.default:
            default = p.model(role.default)
            if default.escalation_only:
                err(((*base, "default"), "an escalation-only model can never be a default"))
            is_local = default.provider == "local"
            if role.locality == "local" and not is_local:
                err(((*base, "default"), "a local role's default must be a local model"))
            if role.locality == "cloud" and is_local:
                err(((*base, "default"), "a cloud role's default must be a cloud model"))
        for alt in role.alternatives:
            if p.model(alt).escalation_only:
                err(((*base, "alternatives"), f"{alt!r} is escalation-only"))
        for fb in role.fallback:
            if not p.is_cloud(fb):
                err(((*base, "fallback"), f"{fb!r} is local; the escalation chain is cloud"))
        for key, listed in (("fallback", role.fallback), ("alternatives", role.alternatives)):
            twice = _listed_twice(p, listed)
            if twice:  # a chain that visits a model twice asks twice and pays twice
                err(((*base, key), f"{twice} is listed twice"))
        if role.default and p.resolve(role.default) in {p.resolve(a) for a in role.alternatives}:
            warnings.append(((*base, "alternatives"), "the default is also an alternative"))
        if role.kind == "llm":
            for key, name in names:
                if p.model(name).context_window < 1:
                    err(((*base, key), f"{name!r} serves an LLM role: its context_window is 0"))
        if role.local_stand_in and p.is_cloud(role.local_stand_in):
            err(((*base, "local_stand_in"), "the stand-in must be a local model"))
        if role.locality == "cloud" and role.local_stand_in is None and not role.sidecar:
            err(((*base, "local_stand_in"), "a cloud role needs a local stand-in"))
        if role.sidecar and role.local_stand_in:
            err(((*base, "local_stand_in"), "a sidecar is escalation-only: no local stand-in"))

    seen_ids: set[str] = set()
    for i, trig in enumerate(p.triggers):
        base = ("triggers", i)
        if trig.id in seen_ids:
            err(((*base, "id"), f"duplicate trigger id {trig.id!r}"))
        seen_ids.add(trig.id)
        if trig.role != "*" and trig.role not in p.roles:
            err(((*base, "role"), f"unknown role {trig.role!r}"))
        elif (
            trig.role in p.roles
            and trig.target is None
            and not p.roles[trig.role].fallback
            and p.roles[trig.role].locality != "cloud"
        ):
            warnings.append(
                ((*base, "role"), f"{trig.role} has no fallback chain: this never escalates")
            )
        elif (
            trig.role in p.roles
            and trig.target is None
            and p.roles[trig.role].locality != "cloud"
            and not any(
                not p.model(m).escalation_only_roles
                or trig.role in p.model(m).escalation_only_roles
                for m in p.chain(trig.role)
                if m in p.models and p.is_cloud(m)  # (an unknown one is said at the role)
            )
        ):
            # every cloud model of the chain is reserved for other roles: decide() skips
            # each, and the trigger fired to no effect ("LOCAL" in route explain, a user
            # audit: the Architect's fallback set to Kimi, escalation-only for others)
            warnings.append(
                (
                    (*base, "role"),
                    f"no cloud model of {trig.role}'s chain may serve it (each is "
                    "escalation-only for other roles): this never escalates",
                )
            )
        if trig.signal in FLAG_SIGNALS:
            if trig.op != "is_true":
                err(((*base, "op"), f"{trig.signal} is a flag: use op = 'is_true'"))
            if trig.threshold is not None:
                err(((*base, "threshold"), f"{trig.signal} is a flag: no threshold"))
        elif trig.signal in NUMERIC_SIGNALS:
            if trig.op == "is_true":
                err(((*base, "op"), f"{trig.signal} is a number: use lt/le/gt/ge"))
            if trig.threshold is None:
                err(((*base, "threshold"), "missing threshold"))
            elif trig.signal in UNIT_SIGNALS and not 0.0 <= trig.threshold <= 1.0:
                err(((*base, "threshold"), f"{trig.threshold} is out of range 0..1"))
            elif trig.threshold < 0:
                err(((*base, "threshold"), f"{trig.threshold} must be >= 0"))
            elif (trig.op == "ge" and trig.threshold == 0) or (
                trig.op == "lt" and trig.signal in UNIT_SIGNALS and trig.threshold > 1
            ):
                # failed_loops >= 0 escalated on the first loop, with the policy called ok
                warnings.append(
                    (
                        (*base, "threshold"),
                        f"{trig.signal} {trig.op} {trig.threshold:g}: always fires",
                    )
                )
            elif (trig.op == "lt" and trig.threshold == 0) or (
                trig.op == "gt" and trig.signal in UNIT_SIGNALS and trig.threshold >= 1
            ):
                warnings.append(
                    (
                        (*base, "threshold"),
                        f"{trig.signal} {trig.op} {trig.threshold:g}: never fires",
                    )
                )
        else:
            err(((*base, "signal"), f"unknown signal {trig.signal!r}"))
        if trig.target is not None:
            if trig.role == "*":
                # decide() puts a target outside the chain first: every role would escalate
                # to it, past its own chain
                err(((*base, "target"), "a trigger of every role ('*') cannot name a target"))
            elif not known(trig.target):
                err(((*base, "target"), f"unknown model {trig.target!r}"))
            elif not p.is_cloud(trig.target):
                err(((*base, "target"), "an escalation target must be a cloud model"))
            elif trig.role in p.roles and p.resolve(trig.target) not in p.chain(trig.role):
                err(((*base, "target"), f"{trig.target!r} is not in {trig.role}'s fallback chain"))
            elif (
                trig.role in p.roles
                and (reserved := p.model(trig.target).escalation_only_roles)
                and trig.role not in reserved
            ):
                # decide() skips it for this role: the trigger could never escalate
                err(
                    (
                        (*base, "target"),
                        f"{trig.target!r} is escalation-only for {', '.join(reserved)}, not for "
                        f"{trig.role}: this trigger could never escalate",
                    )
                )

    # where the local runtimes serve (every loopback name as one: 127.0.0.1 is localhost)
    served_locally = {
        (_LOOPBACK if is_loopback_name(rhp[0]) else rhp[0], rhp[1]): rid
        for rid, rt in p.runtimes.items()
        for url in rt.urls  # (base_urls too: a second endpoint is the runtime's, a review)
        if (rhp := host_port(url)) is not None
    }
    for pid, prov in p.providers.items():
        hp = host_port(prov.base_url) if prov.base_url and pid != "local" else None
        runtime = (
            served_locally.get((_LOOPBACK if is_loopback_name(hp[0]) else hp[0], hp[1]))
            if hp is not None
            else None
        )
        if runtime is not None:
            # a local runtime's own address: its local models would count as cloud, and a
            # Judge among them could approve a merge no local model may (GR-003; a user
            # audit: policy check said "ok" with a warning)
            err(
                (
                    ("providers", pid, "base_url"),
                    f"{prov.base_url} is where runtime {runtime} serves the local models: a "
                    "cloud provider there would make a local Judge approve merges (GR-003)",
                )
            )
        elif hp is not None and is_loopback_name(hp[0]):
            # what serves there runs on this machine, yet its models count as cloud: a
            # Judge's verdict among them approves a merge (GR-003) and nothing masks a
            # local model's view less; fine for a proxy or a fake, said (a conformance audit)
            warnings.append(
                (
                    ("providers", pid, "base_url"),
                    f"cloud provider {pid} on this machine's loopback ({prov.base_url}): its"
                    " models count as cloud (a Judge among them can approve a merge, GR-003)",
                )
            )
    for rid, rt in p.runtimes.items():
        if rt.kind == "ollama" or (rt.base_url and ":11434" in rt.base_url):
            warnings.append(
                (("runtimes", rid), "Ollama endpoint: §6 allows it for dev bring-up only")
            )
        if rt.kind == "llamacpp_inprocess":
            if rt.model is None or not known(rt.model):
                err((("runtimes", rid, "model"), "the in-process runtime needs a catalog model"))
            elif p.model(rt.model).endpoint != "llamacpp_inprocess":
                err((("runtimes", rid, "model"), "model's endpoint must be llamacpp_inprocess"))
        elif not rt.urls:
            err((("runtimes", rid, "base_url"), "an HTTP runtime needs base_url"))
    _check_local_hosts(p, err)
    _check_gateway(p, err)
    _check_high_risk_judge(p, err)
    for i, name in enumerate(p.local_chain.order):
        if name not in p.runtimes:
            err((("local_chain", "order", i), f"unknown runtime {name!r}"))
        elif name in p.local_chain.order[:i]:
            err((("local_chain", "order", i), f"runtime {name!r} is listed twice"))
    last = p.local_chain.order[-1] if p.local_chain.order else None
    if last in p.runtimes and p.runtimes[last].kind != "llamacpp_inprocess":
        err((("local_chain", "order"), "the chain must end in the in-process runtime"))

    for kind in RETRY_KINDS:
        if kind not in p.retries:
            err((("retries",), f"missing retry rule {kind!r}"))
    repair = p.retries.get("bad_output")
    if repair is not None and repair.max_retries > 1:
        err(
            (
                ("retries", "bad_output", "max_retries"),
                "GR-012 allows one repair attempt at most (0 or 1)",
            )
        )
    for tname, tier in p.tiers.items():
        for m in tier.models:
            if not known(m):
                err((("tiers", tname, "models"), f"unknown model {m!r}"))
    for gr in SEED_GUARDRAILS:
        if gr not in p.guardrails:
            err((("guardrails",), f"guardrail {gr} is missing"))
    for gr, rail in p.guardrails.items():
        if gr not in SEED_GUARDRAILS:
            err((("guardrails", gr), "unknown guardrail"))
        elif not rail.enabled:
            # every guardrail is held in code whatever the file says: a switch read as
            # "switched off" while nothing was off told the user something untrue (an audit)
            err(
                (
                    ("guardrails", gr, "enabled"),
                    f"{gr} cannot be switched off (every guardrail is enforced by Switchyard)",
                )
            )

    rule_ids: set[str] = set()
    for i, rule in enumerate(p.high_risk.rules):
        if rule.id in rule_ids:  # `policy diff` matches rules by id: one would go unseen
            err((("high_risk", "rules", i, "id"), f"duplicate rule id {rule.id!r}"))
        rule_ids.add(rule.id)
        for j, pattern in enumerate(rule.lines):
            try:
                re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as exc:
                err((("high_risk", "rules", i, "lines", j), f"bad regex: {exc}"))

    for i, step in enumerate(p.consensus.pipeline):
        if step not in p.roles:
            err((("consensus", "pipeline", i), f"unknown role {step!r}"))
    if p.consensus.critic_role not in p.roles:
        err((("consensus", "critic_role"), f"unknown role {p.consensus.critic_role!r}"))
    if p.consensus.enabled:
        warnings.append(
            (
                ("consensus", "enabled"),
                "consensus is deprecated (GR-001): the pipeline stays single-owner",
            )
        )

    for key in ("default", "local_fallback"):
        name = getattr(p.embeddings, key)
        if not known(name):
            err((("embeddings", key), f"unknown model {name!r}"))
        elif p.model(name).embedding_dim is None:
            err((("embeddings", key), f"{name!r} is not an embedding model"))

    weights = p.memory.weight_tfidf + p.memory.weight_embedding + p.memory.weight_dynamic
    if abs(weights - 1.0) > 1e-6:
        err((("memory",), f"search weights must sum to 1 (they sum to {weights:g})"))
    if p.stage0.chunk_overlap >= p.stage0.chunk_lines:
        err((("stage0", "chunk_overlap"), "overlap must be smaller than chunk_lines"))
    if p.stage0.top_k > p.stage0.prefilter:
        err((("stage0", "top_k"), "top_k cannot exceed prefilter"))

    for i, res in enumerate(p.resolutions):
        warnings.append((("resolutions", i), f"resolved contradiction {res.id}: {res.seed}"))
    return errors, warnings


def cloud_endpoints(p: Policy) -> Callable[[tuple[str, int]], bool]:
    """Whether a (host, port) is a cloud provider's (a known provider host, or one of the
    policy's providers' endpoints): never a local runtime (GR-009). Loopback is always
    local (a test's fake provider and a fake vLLM may share 127.0.0.1)."""
    provider_eps = {
        hp for prov in p.providers.values() if prov.base_url and (hp := host_port(prov.base_url))
    }

    def cloud(hp: tuple[str, int]) -> bool:
        if is_loopback_name(hp[0]):
            return False
        return is_provider_host(hp[0]) or hp in provider_eps

    return cloud


def _check_cache_prices(
    mid: str, model: Model, provider: Provider | None, warnings: list[Finding]
) -> None:
    """A cloud model's prompt-cache prices, as far as they can mislead: a cache write an
    Anthropic model is not priced for is charged at the input price, below the 1.25 × it
    is billed (a cache read unpriced is charged above its bill, which never under-charges);
    a write price on an OpenAI-compatible API is never used (those report no writes)."""
    if provider is None:
        return
    write = model.price_cache_write_usd_per_mtok
    if provider.protocol == "anthropic" and write is None:
        warnings.append(
            (
                ("models", mid),
                "no price_cache_write_usd_per_mtok: prompt-cache writes are charged at the "
                "input price, below what Anthropic bills for them (1.25 × input)",
            )
        )
    elif provider.protocol == "openai" and write is not None:
        warnings.append(
            (
                ("models", mid, "price_cache_write_usd_per_mtok"),
                "never used: an OpenAI-compatible API reports no prompt-cache writes",
            )
        )


_UNPRICED = "a cloud model needs its price: unpriced, its calls cost $0 and pass every cap (GR-011)"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_provider(
    name: str, prov: Provider, err: Callable[[Finding], None], warnings: list[Finding]
) -> None:
    """Where a provider's key goes: an ``https`` URL with a host and no user part (plain
    ``http`` only to loopback, a test's fake), from a variable named like one."""
    url, var = prov.base_url or "", prov.api_key_env or ""
    where = ("providers", name, "base_url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    hp = host_port(url)
    if parts is None or parts.scheme not in ("http", "https") or hp is None:
        err((where, f"expected an http(s) URL with a host, got {url!r}"))
    elif "@" in parts.netloc:
        err((where, "a user or password in the URL: the key goes in api_key_env"))
    elif parts.query or parts.fragment or any(c.isspace() for c in url):
        err((where, f"a query, fragment or space in the URL: {url!r}"))
    elif parts.scheme == "http" and not is_loopback_name(hp[0]):
        err((where, f"plain http to {hp[0]} would send {var or 'the key'} in clear: use https"))
    if not _ENV_NAME.match(var):
        err((("providers", name, "api_key_env"), f"not an environment variable name: {var!r}"))
    elif var not in SECRET_ENV_VARS:
        warnings.append(
            (
                ("providers", name, "api_key_env"),
                f"{var} is not a usual provider key ({', '.join(SECRET_ENV_VARS)}): its value "
                f"is sent to {hp[0] if hp else url} as the key",
            )
        )


def _check_high_risk_judge(p: Policy, err: Callable[[Finding], None]) -> None:
    """GR-002 holds only when a High-Risk change can reach a cloud Judge: a trigger on
    ``high_risk`` for the Judge, and a cloud model in its chain. Without either, every
    High-Risk change is judged locally and can never be merged, with the policy called ok."""
    judge = p.roles.get("judge")
    if judge is None:
        return  # the missing seed role is reported on its own
    chain = [m for m in p.chain("judge") if m in p.models]
    if judge.locality != "cloud":
        err((("roles", "judge", "locality"), "the Judge is a cloud role (GR-002, GR-003)"))
    elif not any(p.is_cloud(m) for m in chain):
        err((("roles", "judge"), "the Judge's chain has no cloud model (GR-002)"))
    if not any(t.signal == "high_risk" for t in p.triggers_for("judge")):
        err(
            (
                ("triggers",),
                "no trigger sends the Judge to the cloud on high_risk: a High-Risk change "
                "would be judged locally and could never be merged (GR-002)",
            )
        )


def _check_local_hosts(p: Policy, err: Callable[[Finding], None]) -> None:
    """Named local hosts (GR-009): well-formed, and never a cloud provider's endpoint.

    A runtime URL or a ``[privacy] local_hosts`` entry on a provider's host would let a
    cloud API through the local_only guard under a local name. Loopback is always local
    (a test's fake provider and a fake vLLM may share 127.0.0.1).
    """
    cloud = cloud_endpoints(p)

    for rid, rt in p.runtimes.items():
        for where, url in _runtime_urls(rt):
            hp = host_port(url)
            if hp is None:
                err((("runtimes", rid, *where), f"not a URL with a host: {url!r}"))
            elif cloud(hp):
                err(
                    (
                        ("runtimes", rid, *where),
                        f"{hp[0]} is a cloud provider's host: it cannot serve a local runtime",
                    )
                )
            elif public_runtime(hp, p.privacy.local_hosts):
                err((("runtimes", rid, *where), f"{hp[0]} {PUBLIC_RUNTIME}"))
    for i, entry in enumerate(p.privacy.local_hosts):
        hp = parse_host_port(entry)
        if hp is None or "/" in entry.split("://", 1)[-1]:
            err((("privacy", "local_hosts", i), f"expected host:port, got {entry!r}"))
        elif cloud(hp):
            err(
                (
                    ("privacy", "local_hosts", i),
                    f"{hp[0]} is a cloud provider's host: it can never be named local",
                )
            )


def _check_gateway(p: Policy, err: Callable[[Finding], None]) -> None:
    """The gateway serves LLM roles of this policy; aliases and auto name served roles."""
    g = p.gateway
    for i, rid in enumerate(g.roles):
        if rid not in p.roles:
            err((("gateway", "roles", i), f"unknown role {rid!r}"))
        elif p.roles[rid].kind != "llm":
            err((("gateway", "roles", i), f"{rid} is not an LLM role"))
    if g.auto_role not in g.roles:
        err((("gateway", "auto_role"), f"{g.auto_role!r} is not one of gateway.roles"))
    for pattern, rid in g.aliases.items():
        if rid not in g.roles:
            err((("gateway", "aliases", pattern), f"{rid!r} is not one of gateway.roles"))
    if not g.escalate_suffix or g.escalate_suffix.strip() != g.escalate_suffix:
        err((("gateway", "escalate_suffix"), "a non-empty suffix without spaces"))


def _runtime_urls(rt: Runtime) -> list[tuple[KeyPath, str]]:
    """Each endpoint URL of a runtime with where it stands in the file."""
    found: list[tuple[KeyPath, str]] = []
    if rt.base_url:
        found.append((("base_url",), rt.base_url))
    found += [(("base_urls", i), url) for i, url in enumerate(rt.base_urls)]
    return found
