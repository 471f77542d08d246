"""Which cloud models share an endpoint (app.router.same_host): pure reads of the policy."""

from __future__ import annotations

from app.policy.schema import Policy
from app.router.same_host import endpoint_of, host_of, served_alongside


def with_urls(policy: Policy, **urls: str | None) -> Policy:
    providers = {
        name: p.model_copy(update={"base_url": urls[name]}) if name in urls else p
        for name, p in policy.providers.items()
    }
    return policy.model_copy(update={"providers": providers})


def test_deepseeks_two_models_share_its_endpoint_and_no_other_does(policy: Policy) -> None:
    assert endpoint_of(policy, "deepseek-reasoner") == "https://api.deepseek.com"
    assert served_alongside(policy, "deepseek-reasoner") == ["deepseek-chat"]
    assert served_alongside(policy, "deepseek-chat") == ["deepseek-reasoner"]
    # an alias is its model (deepseek-r2 is the reasoner)
    assert served_alongside(policy, "deepseek-r2") == ["deepseek-chat"]
    alongside_sonnet = served_alongside(policy, "claude-sonnet-4.6")
    assert alongside_sonnet and all(
        policy.model(m).provider == "anthropic" for m in alongside_sonnet
    )
    assert "claude-sonnet-4.6" not in alongside_sonnet


def test_a_local_model_has_no_cloud_endpoint(policy: Policy) -> None:
    assert endpoint_of(policy, "qwen2.5-coder-32b") is None
    assert served_alongside(policy, "qwen2.5-coder-32b") == []


def test_two_providers_at_one_url_are_one_endpoint(policy: Policy) -> None:
    """A proxy both providers are pointed at: one host, whoever's models they are."""
    shared = with_urls(policy, deepseek="http://127.0.0.1:9000/", moonshot="http://127.0.0.1:9000")
    alongside = served_alongside(shared, "deepseek-chat")
    assert "deepseek-reasoner" in alongside and "kimi-k2-instruct" in alongside
    assert not any(policy.model(m).provider == "openai" for m in alongside)
    # the same host on another port is another endpoint
    apart = with_urls(policy, deepseek="http://127.0.0.1:9000", moonshot="http://127.0.0.1:9001")
    assert served_alongside(apart, "deepseek-chat") == ["deepseek-reasoner"]


def test_a_provider_without_a_url_is_its_own_endpoint(policy: Policy) -> None:
    bare = with_urls(policy, deepseek=None)
    assert endpoint_of(bare, "deepseek-chat") == "provider:deepseek"
    assert served_alongside(bare, "deepseek-chat") == ["deepseek-reasoner"]


def test_a_host_is_named_without_the_urls_user_part() -> None:
    assert host_of("https://api.deepseek.com") == "api.deepseek.com"
    assert host_of("http://127.0.0.1:8123/v1") == "127.0.0.1:8123"
    assert host_of("https://user:s3cret@proxy.example:8443/v1") == "proxy.example:8443"
    assert host_of("provider:deepseek") == "deepseek"
