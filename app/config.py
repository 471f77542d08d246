"""Settings: defaults < user config file (XDG) < ``SWITCHYARD_*`` environment < flags.

The seed's own switches ``SPEC_KIT_CONSENSUS`` and ``SPEC_KIT_CRITIC`` are accepted
beside ``SWITCHYARD_CONSENSUS`` / ``SWITCHYARD_CRITIC``.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from app import paths
from app.errors import ConfigError

ApproveMode = Literal["ask", "allow", "deny"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWITCHYARD_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    policy: Path | None = Field(default=None, description="policy file; default: the shipped one")
    local_only: bool | None = Field(
        default=None, description="override the policy's privacy.local_only (GR-009)"
    )
    data_dir: Path = Field(default_factory=paths.user_data_dir)
    theme: str = "switchyard-dark"
    n_threads: int | None = Field(default=None, ge=1, le=256)
    approve: ApproveMode = "ask"
    approval_timeout_s: float = Field(default=60.0, gt=0, le=3600)
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
    if any(name.upper() == "SWITCHYARD_APPROVE" for name in os.environ):
        return mode, f"SWITCHYARD_APPROVE={mode}"
    if "approve" not in settings.model_fields_set:
        return mode, "the default"
    return mode, f'approve = "{mode}" in {paths.user_config_file()}'


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "unknown"


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a bad environment or config file into one clear ConfigError."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    config_file = paths.user_config_file()
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(_named(str(p)) for p in err["loc"])
            problems.append(f"setting {loc}: {err['msg']}")
        source = f" (env SWITCHYARD_* or {config_file})"
        raise ConfigError(_one_line("; ".join(problems) + source)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_one_line(f"{config_file}: toml syntax: {exc}")) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config_file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{config_file}: cannot read config: {exc.strerror or exc}") from None
    except SettingsError as exc:  # an environment value pydantic-settings cannot decode
        raise ConfigError(_one_line(f"settings: {exc}")) from None


def _named(key: str) -> str:
    """The name the user gave a setting with several (``SWITCHYARD_CONSENSUS``, not the
    first alias ``SPEC_KIT_CONSENSUS``): the variable that is set, else the file's key."""
    for name, field in Settings.model_fields.items():
        choices = field.validation_alias
        if isinstance(choices, AliasChoices) and key in choices.choices:
            env = {k.upper() for k in os.environ}
            for choice in choices.choices:
                if isinstance(choice, str) and choice.upper() in env:
                    return choice
            return name
    return key


def _one_line(text: str) -> str:
    return " ".join(text.split())
