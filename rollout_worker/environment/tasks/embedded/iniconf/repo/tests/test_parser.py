import pytest

from iniconf import ParseError, parse


def test_sections_and_keys():
    text = "[server]\nHost = example.org\nport = 8080\n\n[client]\nretries = 3\n"
    assert parse(text) == {"server": {"host": "example.org", "port": "8080"}, "client": {"retries": "3"}}


def test_comments_and_blank_lines_are_ignored():
    text = "# top comment\n; another\n\n[a]\nx = 1\n"
    assert parse(text) == {"a": {"x": "1"}}


def test_keys_before_first_section_use_default_section():
    assert parse("name = demo\n") == {"DEFAULT": {"name": "demo"}}
    assert parse("name = demo\n", default_section="root") == {"root": {"name": "demo"}}


def test_missing_equals_raises_with_line_number():
    with pytest.raises(ParseError) as info:
        parse("[a]\nx = 1\njust words\n")
    assert info.value.lineno == 3


def test_unterminated_section_header():
    with pytest.raises(ParseError, match="unterminated"):
        parse("[broken\n")
