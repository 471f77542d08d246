"""Settings: defaults < user config file (XDG) < ``SWITCHYARD_*`` environment < flags.

The seed's own switches ``SPEC_KIT_CONSENSUS`` and ``SPEC_KIT_CRITIC`` are accepted
beside ``SWITCHYARD_CONSENSUS`` / ``SWITCHYARD_CRITIC``.
"""

from __future__ import annotations

import getpass
import os
import tomllib
import unicodedata
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from app import paths
from app.errors import ConfigError
from app.toml_errors import file_toml_error

ApproveMode = Literal["ask", "allow", "deny"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWITCHYARD_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
        # `SWITCHYARD_DATA_DIR=` is unset, as in a shell: it was Path(""), the current
        # folder, which then got a ledger and a chmod 700
        env_ignore_empty=True,
    )

    policy: Path | None = Field(default=None, description="policy file; default: the shipped one")
    local_only: bool | None = Field(
        default=None, description="override the policy's privacy.local_only (GR-009)"
    )
    data_dir: Path = Field(default_factory=paths.user_data_dir)
    theme: str = "switchyard-dark"
    n_threads: int | None = Field(default=None, ge=1, le=256)
    approve: ApproveMode = "ask"
    #: seconds an unanswered approval waits; at most the policy's [approvals] timeout_s
    #: (the shorter wins: the policy bounds how long a request may hold a cloud step)
    approval_timeout_s: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False)
    vllm_url: str | None = None
    llamacpp_server_url: str | None = None
    consensus: bool = Field(
        default=False,
        validation_alias=AliasChoices("SPEC_KIT_CONSENSUS", "SWITCHYARD_CONSENSUS", "consensus"),
    )
    critic: bool = Field(
        default=False,
        validation_alias=AliasChoices("SPEC_KIT_CRITIC", "SWITCHYARD_CRITIC", "critic"),
    )
    #: opt every session in to the Tier2 synthesis (cloud, after approval; §1)
    tier2: bool = Field(default=False, validation_alias=AliasChoices("SWITCHYARD_TIER2", "tier2"))
    #: the team store (docs/team.md): ``postgresql://…`` keeps the ledger and the audit log
    #: in a shared database; unset, both stay in SQLite files in data_dir
    database_url: str | None = None
    #: when that database cannot be reached, use the SQLite files instead (audited)
    database_fallback: bool = False
    #: who this machine's spend and audit lines belong to in the team store
    user: str = Field(default_factory=lambda: _os_user(), min_length=1, max_length=64)
    team: str = Field(default="default", min_length=1, max_length=64)
    #: the fields a flag gave (load_settings), so a source can be named
    _flags: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("user", "team", mode="before")
    @classmethod
    def _a_name(cls, value: object) -> object:
        """A name others read in their listings (``audit chains``, ``audit tail --team``,
        ``budget``): a newline in it forged a row there, an escape repainted the terminal
        (an audit found both), and " platform" was a team of its own with a cap of its own."""
        if not isinstance(value, str):
            return value
        if any(_unprintable(c) for c in value):
            # a zero-width space made "platform\u200b" a team of its own that looks the same
            raise PydanticCustomError(
                "name_control",
                "must be printable: no newline, tab, zero-width or other control character",
            )
        if value != value.strip():
            raise PydanticCustomError("name_space", "must not start or end with a space")
        return value

    @field_validator("data_dir", "policy", mode="before")
    @classmethod
    def _a_path(cls, value: object) -> object:
        """A path is text, and not empty (``""`` was the current folder; ``data_dir = 5``
        was "Input is not a valid path for <class 'pathlib.Path'>")."""
        if value is None or isinstance(value, Path):
            return value
        if not isinstance(value, str):
            raise PydanticCustomError(
                "path_type", "must be a path as a string, not {kind}", {"kind": _kind(value)}
            )
        if not value.strip():
            raise PydanticCustomError(
                "path_empty", "must not be empty: leave it out for the default"
            )
        # ``~`` is the home folder, as a shell reads it (a TOML file's value is no shell's:
        # ``data_dir = "~/sw"`` made a folder named ``~`` in each folder a command ran in)
        return os.path.expanduser(value) if value.startswith("~") else value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """The data folder is one place: a relative one named another folder from each
        folder a command ran in, each with its own ledger and audit chain, and the caps
        held per folder only (an audit)."""
        if not value.is_absolute():
            raise PydanticCustomError(
                "path_relative",
                "must be an absolute path (or begin with ~): a relative one is another "
                "folder, with its own ledger and audit log, from each folder you run in",
            )
        return value

    @field_validator("vllm_url", "llamacpp_server_url", mode="before")
    @classmethod
    def _urls(cls, value: object) -> object:
        """One http(s) URL with a host, or several separated by commas (what
        :func:`app.backends.runtimes.resolve_urls` reads). ``notaurl`` was taken, and
        ``local status`` then said "UnsupportedProtocol"."""
        if value is None:
            return value
        if not isinstance(value, str):
            raise PydanticCustomError(
                "url_type", "must be a URL as a string, not {kind}", {"kind": _kind(value)}
            )
        urls = [u.strip() for u in value.split(",") if u.strip()]
        for url in urls:
            port = _bad_port(url)
            if port is not None:
                # (it said "must be an http:// … URL with a host" of http://127.0.0.1:99999)
                # (the port alone: the URL may hold a password)
                raise PydanticCustomError(
                    "url_port", "port {port} is not a port number (1-65535)", {"port": port}
                )
        if not urls or not all(_is_http_url(u) for u in urls):
            raise PydanticCustomError(
                "url",
                "must be an http:// or https:// URL with a host, such as "
                "http://127.0.0.1:8000/v1, or several separated by commas",
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=paths.user_config_file())
        return (init_settings, env_settings, toml)

    @property
    def audit_db(self) -> Path:
        return self.data_dir / "audit.sqlite3"

    @property
    def ledger_db(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    @property
    def memory_db(self) -> Path:
        return self.data_dir / "memory.sqlite3"


def approve_setting(settings: Settings, given: ApproveMode | None) -> tuple[ApproveMode, str]:
    """The approval mode in force and where it was said, for its audit lines: a standing
    ``allow`` from the environment or the config file is not a flag typed for one
    command, and the approval line said "--approve allow" for all three."""
    if given is not None:
        return given, f"--approve {given}"
    mode = settings.approve
    if _env_value("SWITCHYARD_APPROVE"):
        return mode, f"SWITCHYARD_APPROVE={mode}"
    if "approve" not in settings.model_fields_set:
        return mode, "the default"
    return mode, f'approve = "{mode}" in {paths.user_config_file()}'


def setting_source(settings: Settings, field: str) -> str | None:
    """Where ``field``'s value came from, for a message: ``--policy``, the variable
    (``SWITCHYARD_POLICY``), or the config file and line; None for the default."""
    if field not in settings.model_fields_set:
        return None
    return _source(field, field, settings._flags)


def _source(field: str, key: str, flags: frozenset[str]) -> str:
    """The source of ``field`` (given as ``key``: its name or an alias) that wins:
    a flag, then the environment, then the config file, as pydantic-settings reads them."""
    if field in flags:
        return f"--{field.replace('_', '-')}"
    for name in _env_names(field):
        if _env_value(name):
            return name
    config_file = paths.user_config_file()
    line = _file_line(config_file, key)
    return f"{config_file}:{line}" if line else str(config_file)


def _env_names(field: str) -> list[str]:
    """The variables that set ``field``: its aliases, else ``SWITCHYARD_<FIELD>``."""
    info = Settings.model_fields.get(field)
    if info is None:  # an unknown key: only the config file has those
        return []
    choices = info.validation_alias
    if isinstance(choices, AliasChoices):
        return [c for c in choices.choices if isinstance(c, str) and c != field]
    return [f"SWITCHYARD_{field.upper()}"]


def _env_value(name: str) -> str:
    """The value of the variable ``name`` (any case, as pydantic-settings reads it);
    empty when unset or set to nothing (which means unset)."""
    for key, value in os.environ.items():
        if key.upper() == name.upper() and value:
            return value
    return ""


def _file_line(config_file: Path, key: str) -> int | None:
    """The line of the config file that sets ``key``, when it can be found."""
    from app.policy.lines import key_lines, line_for

    try:
        text = config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return line_for(key_lines(text), (key,))


def _field_of(key: str) -> str:
    """The field ``key`` (a field name or one of its aliases, as pydantic reports it)."""
    for name, info in Settings.model_fields.items():
        choices = info.validation_alias
        if isinstance(choices, AliasChoices) and key in choices.choices:
            return name
    return key


def _kind(value: object) -> str:
    kinds = {
        bool: "true/false",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "a table",
    }
    return kinds.get(type(value), type(value).__name__)


def _bad_port(url: str) -> str | None:
    """The port of an http(s) URL when it is a number out of range (``:99999``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    hostport = parts.netloc.rpartition("@")[2].rpartition("]")[2]  # (an IPv6 host's colons)
    _, colon, port = hostport.rpartition(":")
    # (ASCII digits only: ``²`` is a digit to isdigit() and not to int())
    if colon and port.isascii() and port.isdigit() and not 0 < int(port) < 65536:
        return port
    return None


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _os_user() -> str:
    """The OS user's name, made fit to be the default (a name the validator would refuse,
    from $USER, failed every command, blaming a config file that was not there)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "unknown"
    shown = "".join(c for c in name if not _unprintable(c)).strip()[:64]
    return shown or "unknown"


def _unprintable(c: str) -> bool:
    """A control or format character (a newline, an escape, a zero-width space, a bidi
    override): invisible, or obeyed by a terminal."""
    return unicodedata.category(c) in ("Cc", "Cf")


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a bad environment or config file into one clear ConfigError
    that names where the bad value came from (the variable, or the file and line)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    flags = frozenset(clean)
    config_file = paths.user_config_file()
    _check_config_file(config_file)
    try:
        settings = Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(_named(str(p)) for p in err["loc"])
            key = str(err["loc"][0]) if err["loc"] else ""
            source = _source(_field_of(key), key, flags)
            problems.append(f"setting {loc}: {err['msg']} (from {source})")
        raise ConfigError(_one_line("; ".join(problems))) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file_toml_error(config_file, str(exc))) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config_file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{config_file}: cannot read config: {exc.strerror or exc}") from None
    except SettingsError as exc:  # an environment value pydantic-settings cannot decode
        raise ConfigError(_one_line(f"settings: {exc}")) from None
    settings._flags = flags
    return settings


def _check_config_file(config_file: Path) -> None:
    """A config file that is there but cannot be one (a folder, a broken link) was
    skipped without a word; it is a ConfigError naming it."""
    try:
        if config_file.is_file() or not (config_file.exists() or config_file.is_symlink()):
            return
    except OSError as exc:  # a folder on its way that cannot be entered: a traceback (an audit)
        raise ConfigError(f"{config_file}: cannot read config: {exc.strerror}") from None
    if config_file.is_dir():
        why = "a folder"
    elif config_file.exists():
        why = "not a regular file"
    else:
        why = "a symbolic link to nothing"
    raise ConfigError(f"{config_file}: {why}, not a config file (remove it or put TOML there)")


def _named(key: str) -> str:
    """The name the user gave a setting with several (``SWITCHYARD_CONSENSUS``, not the
    first alias ``SPEC_KIT_CONSENSUS``): the variable that is set, else the file's key."""
    for name, field in Settings.model_fields.items():
        choices = field.validation_alias
        if isinstance(choices, AliasChoices) and key in choices.choices:
            for choice in choices.choices:
                if isinstance(choice, str) and _env_value(choice):
                    return choice
            return name
    return key


def _one_line(text: str) -> str:
    return " ".join(text.split())
