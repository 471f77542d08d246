"""Named local hosts under local_only (GR-009), decided purely: which addresses count as
private, which endpoints a policy names, and what the loader refuses to call local."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import PolicyError
from app.hosts import (
    host_port,
    is_private_address,
    is_provider_host,
    named_host_refusal,
    named_local_hosts,
    parse_host_port,
)
from app.policy import load_policy
from app.resources import default_policy_path

GPU = ("gpu-box.lan", 8000)


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("172.31.255.255", True),
        ("192.168.1.20", True),
        ("fd12:3456::5", True),
        ("::ffff:192.168.1.20", True),
        ("172.32.0.1", False),  # just outside 172.16/12
        ("169.254.169.254", False),  # link-local: cloud metadata services live here
        ("fe80::1", False),
        ("8.8.8.8", False),
        ("203.0.113.7", False),
        ("2001:db8::1", False),
        ("::ffff:8.8.8.8", False),
        ("gpu-box.lan", False),  # a name is never an address
    ],
)
def test_private_addresses(address: str, private: bool) -> None:
    assert is_private_address(address) is private


def test_host_port_parsing() -> None:
    assert host_port("http://GPU-Box.lan:8000/v1") == GPU
    assert host_port("https://gpu-box.lan/v1") == ("gpu-box.lan", 443)
    assert host_port("http://[fd00::5]:8000/v1") == ("fd00::5", 8000)
    assert parse_host_port("gpu-box.lan:8000") == GPU
    assert parse_host_port("gpu box:80") is None
    assert parse_host_port("host:99999") is None


def test_a_named_host_passes_only_on_private_addresses() -> None:
    named = frozenset({GPU})
    assert named_host_refusal("gpu-box.lan", 8000, named, ["192.168.1.20"]) is None
    assert named_host_refusal("gpu-box.lan", 8000, named, ["127.0.0.2"]) is None
    # a cloud VM that happens to be called gpu-box
    why = named_host_refusal("gpu-box.lan", 8000, named, ["203.0.113.7"])
    assert why is not None and "203.0.113.7" in why
    # one public address among private ones is enough to refuse (the OS may pick it)
    assert named_host_refusal("gpu-box.lan", 8000, named, ["10.0.0.5", "8.8.8.8"]) is not None
    assert named_host_refusal("gpu-box.lan", 8000, named, []) is not None  # no answer
    # the right name on another port, or another name, is not named
    assert named_host_refusal("gpu-box.lan", 8001, named, ["10.0.0.5"]) is not None
    assert named_host_refusal("other.lan", 8000, named, ["10.0.0.5"]) is not None


def test_the_named_set_leaves_loopback_out() -> None:
    named = named_local_hosts(
        ["http://127.0.0.1:8000/v1", "http://gpu-box.lan:8000/v1"], ["[fd00::5]:8080"]
    )
    assert named == frozenset({GPU, ("fd00::5", 8080)})


def test_provider_hosts() -> None:
    assert is_provider_host("api.openai.com") and is_provider_host("API.DeepSeek.com.")
    assert is_provider_host("x.moonshot.ai") and not is_provider_host("notopenai.com")
    assert not is_provider_host("gpu-box.lan")


def _policy_with(tmp_path: Path, old: str, new: str) -> Path:
    text = default_policy_path().read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "policy.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_a_policy_names_its_lan_runtime_and_extra_hosts(tmp_path: Path) -> None:
    path = _policy_with(
        tmp_path,
        'base_url = "http://127.0.0.1:8000/v1"',
        'base_url = "http://gpu-box.lan:8000/v1"',
    )
    path.write_text(
        path.read_text().replace(
            "local_only = false", 'local_only = false\nlocal_hosts = ["gpu-2.lan:8001"]', 1
        )
    )
    policy = load_policy(path).policy
    assert policy.named_local_hosts() == frozenset({GPU, ("gpu-2.lan", 8001)})


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (
            'base_url = "http://127.0.0.1:8000/v1"',
            'base_url = "https://api.deepseek.com/v1"',
            "runtimes.vllm.base_url",
        ),
        (
            "local_only = false",
            'local_only = false\nlocal_hosts = ["api.openai.com:443"]',
            "privacy.local_hosts.0",
        ),
        (
            "local_only = false",
            'local_only = false\nlocal_hosts = ["gpu box"]',
            "privacy.local_hosts.0",
        ),
    ],
)
def test_the_loader_never_lets_a_provider_be_named_local(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    path = _policy_with(tmp_path, old, new)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert f"{path}:" in message and field in message
