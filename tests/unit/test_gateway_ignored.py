"""The names of the fields the gateway carries to no backend (app/gateway/ignored.py): they
go into a response header, so a client's made-up keys must not break it."""

from __future__ import annotations

from app.gateway.ignored import MOST_NAMED, NAME_MAX, ignored_fields

USER = [{"role": "user", "content": "x"}]


def test_a_key_is_named_as_printable_ascii_and_cut_to_its_limit() -> None:
    body = {"model": "m", "messages": USER, "é\r\nx-evil: 1": 1, "k" * 200: 1, "a,b": 1}
    names = ignored_fields("chat", body)
    assert names == ["a?b", "k" * (NAME_MAX - 3) + "...", "???x-evil: 1"]
    assert all(n.isascii() and n.isprintable() and "," not in n for n in names)


def test_many_keys_are_counted_past_the_first_few() -> None:
    body = {"model": "m", "messages": USER, **{f"f{i:03d}": 1 for i in range(100)}}
    names = ignored_fields("chat", body)
    assert len(names) == MOST_NAMED + 1 and names[-1] == f"(+{100 - MOST_NAMED} more)"


def test_values_that_ask_for_nothing_are_not_named() -> None:
    body = {"model": "m", "messages": USER, "a": None, "b": False, "c": "", "d": [], "e": {}}
    assert ignored_fields("chat", body) == []
    assert ignored_fields("messages", {**body, "thinking": {"type": "disabled"}}) == []
    assert ignored_fields("messages", {**body, "thinking": {"type": "enabled"}}) == ["thinking"]
