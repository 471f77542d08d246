"""The code tokenizer: identifiers split and kept whole, short tokens and stopwords out."""

from __future__ import annotations

from app.stage0.tokenize import STOPWORDS, count_tokens, split_identifier, tokenize


def test_snake_case_is_split_and_kept_whole() -> None:
    assert tokenize("parse_http_response") == ["parse_http_response", "parse", "http", "response"]


def test_camel_case_and_acronyms_are_split() -> None:
    assert tokenize("HTTPServerError") == ["httpservererror", "http", "server", "error"]
    assert tokenize("getURLForUser") == ["geturlforuser", "get", "url", "user"]


def test_digits_are_split_off_and_short_parts_dropped() -> None:
    assert tokenize("utf8Decode") == ["utf8decode", "utf", "decode"]
    assert tokenize("base64_encode2") == ["base64_encode2", "base", "64", "encode"]


def test_a_simple_word_is_not_repeated() -> None:
    assert tokenize("Budget budget") == ["budget", "budget"]


def test_short_tokens_stopwords_and_long_numbers_are_dropped() -> None:
    assert tokenize("a x = the self.value if 1234567 else 404") == ["value", "404"]
    assert {"the", "self", "return"} <= STOPWORDS


def test_dunder_names_give_their_word() -> None:
    assert tokenize("__init__ __all__") == ["init", "all"]


def test_non_ascii_words_split_on_letters_and_digits_only() -> None:
    assert split_identifier("naïveCafé_x2") == ("naïvecafé_x2", "naïvecafé")


def test_punctuation_separates_words() -> None:
    assert tokenize("os.path.join(a, b) -> str") == ["os", "path", "join", "str"]


def test_count_tokens_over_several_texts() -> None:
    counts = count_tokens(["read_file", "file"])
    assert counts == {"read_file": 1, "read": 1, "file": 2}
