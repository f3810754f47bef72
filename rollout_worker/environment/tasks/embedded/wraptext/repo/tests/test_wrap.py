import pytest

from wraptext import fill, shorten, wrap


def test_wraps_at_word_boundaries():
    assert wrap("one two three four", 11) == ["one two", "three four"]


def test_long_word_gets_its_own_line():
    assert wrap("a supercalifragilistic b", 5) == ["a", "supercalifragilistic", "b"]


def test_empty_text():
    assert wrap("   ", 10) == [] and fill("", 10) == ""


def test_invalid_width():
    with pytest.raises(ValueError):
        wrap("x", 0)


def test_shorten():
    assert shorten("Hello   world", 20) == "Hello world"
    assert shorten("The quick brown fox jumps", 15) == "The quick [...]"
