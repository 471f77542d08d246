from parser import evaluate, parse, tokenize


def test_tokenize_splits_numbers_and_operators() -> None:
    assert tokenize("12 + 3") == ["12", "+", "3"]


def test_parse_keeps_the_last_token() -> None:
    assert parse(["1", "+", "2"]) == [("num", "1"), ("op", "+"), ("num", "2")]


def test_evaluate_adds_and_subtracts() -> None:
    assert evaluate("1 + 2 - 3 + 10") == 10
