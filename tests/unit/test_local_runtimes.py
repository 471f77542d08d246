"""The one definition of where a local runtime listens, and of the local_only switch,
shared by the router's registry and the launcher (``switchyard local``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.backends.local_only import effective_local_only
from app.backends.registry import BackendRegistry
from app.backends.runtimes import api_root, resolve_url, runtime_url, url_overrides
from app.config import Settings
from app.errors import ConfigError
from app.policy import Policy


def with_local_only(policy: Policy, on: bool) -> Policy:
    return policy.model_copy(
        update={"privacy": policy.privacy.model_copy(update={"local_only": on})}
    )


@pytest.mark.parametrize(
    ("policy_on", "setting", "flag", "expected"),
    [
        (False, None, False, False),
        (False, False, False, False),
        (False, True, False, True),
        (False, None, True, True),
        (True, None, False, True),
        # the bug the launcher had: the settings may turn local_only on, never off
        (True, False, False, True),
        (True, False, True, True),
    ],
)
def test_local_only_can_be_turned_on_by_any_layer_and_off_by_none(
    policy: Policy, policy_on: bool, setting: bool | None, flag: bool, expected: bool
) -> None:
    settings = Settings(local_only=setting)
    assert effective_local_only(with_local_only(policy, policy_on), settings, flag) is expected


def test_there_is_one_local_only_rule() -> None:
    """The router's session and the launcher ask the same function; no other copy."""
    import app.backends.local_status as status
    import app.router.session as session

    assert session.effective_local_only is effective_local_only
    assert status.effective_local_only is effective_local_only


def test_settings_urls_beat_the_policy_and_lose_their_trailing_slash(policy: Policy) -> None:
    assert runtime_url(policy, Settings(), "vllm") == "http://127.0.0.1:8000/v1"
    assert runtime_url(policy, Settings(), "llamacpp_server") == "http://127.0.0.1:8080/v1"
    settings = Settings(vllm_url="http://gpu-box:9000/v1/")
    assert url_overrides(settings, policy) == {"vllm": "http://gpu-box:9000/v1/"}
    assert runtime_url(policy, settings, "vllm") == "http://gpu-box:9000/v1"
    assert runtime_url(policy, settings, "llamacpp_server") == "http://127.0.0.1:8080/v1"
    # the in-process runtime has no URL; an unknown runtime has none either
    assert runtime_url(policy, settings, "llamacpp_inprocess") is None
    assert runtime_url(policy, settings, "nope") is None
    # a settings URL counts even for a runtime the policy does not list
    assert resolve_url(policy, "nope", {"nope": "http://127.0.0.1:1/v1"}) == (
        "http://127.0.0.1:1/v1"
    )


@pytest.mark.parametrize(
    ("field", "url", "host"),
    [
        ("vllm_url", "https://api.openai.com/v1", "api.openai.com"),
        (
            "llamacpp_server_url",
            "http://127.0.0.1:1/v1, https://api.deepseek.com",
            "api.deepseek.com",
        ),
        ("vllm_url", "https://api.anthropic.com:443/v1", "api.anthropic.com"),
    ],
)
def test_a_settings_url_on_a_cloud_providers_host_is_refused_as_the_policys_is(
    policy: Policy, field: str, url: str, host: str
) -> None:
    """The loader refused a provider's host as a runtime's base_url in the policy; the same
    URL in SWITCHYARD_VLLM_URL was probed and served prompts, unmasked, as a local model
    (an audit found it)."""
    settings = Settings(**{field: url})
    for ask in (
        lambda: url_overrides(settings, policy),
        lambda: runtime_url(policy, settings, "vllm"),
    ):
        with pytest.raises(ConfigError) as exc:
            ask()
        assert exc.value.exit_code == 2
        assert field in str(exc.value) and f"{host} is a cloud provider's host" in str(exc.value)
    # a host of the team's own is the user's to name (local_only asks for local_hosts)
    assert url_overrides(Settings(vllm_url="http://gpu-box:9000/v1"), policy)


def test_api_root_is_where_health_is_served() -> None:
    assert api_root("http://h:8000/v1") == "http://h:8000"
    assert api_root("http://h:8000/v1/") == "http://h:8000"
    assert api_root("http://h:8000") == "http://h:8000"


async def test_the_registry_and_the_launcher_agree_on_every_runtime_url(policy: Policy) -> None:
    settings = Settings(
        vllm_url="http://127.0.0.1:9001/v1/", llamacpp_server_url="http://127.0.0.1:9002/v1"
    )
    registry = BackendRegistry(
        policy, local_only=True, runtime_urls=url_overrides(settings, policy)
    )
    try:
        for runtime in policy.runtimes:
            assert registry.url(runtime) == (runtime_url(policy, settings, runtime) or "")
        assert registry.url("vllm") == "http://127.0.0.1:9001/v1"
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://8.8.8.8:8000/v1", True),
        ("http://[2001:4860::8888]:8000/v1", True),
        ("http://127.0.0.1:1/v1, http://93.184.215.14:8000/v1", True),
        ("http://10.0.0.7:8000/v1", False),  # the GPU box on the private network
        ("http://192.168.1.20:8000/v1", False),
        ("http://gpu-box.lan:8000/v1", False),  # a name: looked at when called
        ("http://100.101.102.103:8000/v1", False),  # a tailnet's address (100.64/10)
        ("http://[::ffff:8.8.8.8]:8000/v1", True),
    ],
)
def test_a_settings_url_at_a_public_address_is_refused(
    policy: Policy, url: str, refused: bool
) -> None:
    """``SWITCHYARD_VLLM_URL=http://8.8.8.8:8000/v1`` was used outside local_only: the
    local roles' prompts went to a public host, unmasked and unapproved (a user audit)."""
    settings = Settings(vllm_url=url)
    if not refused:
        assert url_overrides(settings, policy)
        return
    with pytest.raises(ConfigError, match="is a public address: a local runtime serves"):
        url_overrides(settings, policy)


def test_a_policy_runtime_at_a_public_address_is_refused(tmp_path: Path) -> None:
    from app.errors import PolicyError
    from app.policy import load_policy
    from tests.fakes.policy import policy_pointing

    path = policy_pointing(tmp_path)
    text = path.read_text().replace("http://127.0.0.1:8000/v1", "http://8.8.8.8:8000/v1", 1)
    assert "8.8.8.8" in text
    path.write_text(text)
    with pytest.raises(PolicyError, match=r"runtimes\.vllm\.base_url: 8\.8\.8\.8 is a public"):
        load_policy(path)


def test_a_public_address_listed_as_local_may_serve(tmp_path: Path) -> None:
    """A LAN of public addresses (a university's, an IPv6 home network without NAT) is
    the user's own: named in ``[privacy] local_hosts`` it may serve (a review: refused
    with no way out)."""
    from app.policy import load_policy
    from tests.fakes.policy import policy_pointing

    path = policy_pointing(tmp_path)
    text = path.read_text().replace("http://127.0.0.1:8000/v1", "http://18.7.22.69:8000/v1", 1)
    text = text.replace("[privacy]\n", '[privacy]\nlocal_hosts = ["18.7.22.69:8000"]\n', 1)
    assert "local_hosts = [" in text
    path.write_text(text)
    policy = load_policy(path).policy
    assert url_overrides(Settings(vllm_url="http://18.7.22.69:8000/v1"), policy)
    with pytest.raises(ConfigError, match="list HOST:PORT in \\[privacy\\] local_hosts"):
        url_overrides(Settings(vllm_url="http://18.7.22.70:8000/v1"), policy)
