import pytest

from envfile import parse_env


def test_simple_pairs():
    assert parse_env("A=1\nB = two\n") == {"A": "1", "B": "two"}


def test_export_prefix():
    assert parse_env("export TOKEN=abc") == {"TOKEN": "abc"}


def test_comments_and_blank_lines():
    assert parse_env("# comment\n\nX=1\n   # indented comment\n") == {"X": "1"}


def test_inline_comment_on_unquoted_value():
    assert parse_env("PORT=8080 # default") == {"PORT": "8080"}


def test_invalid_line():
    with pytest.raises(ValueError, match="line 2"):
        parse_env("A=1\nnot a pair\n")


def test_later_definition_wins():
    assert parse_env("A=1\nA=2") == {"A": "2"}
