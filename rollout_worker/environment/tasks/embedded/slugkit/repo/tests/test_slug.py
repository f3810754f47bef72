from slugkit import slugify


def test_simple_word():
    assert slugify("Hello") == "hello"


def test_accents_are_folded():
    assert slugify("Crème") == "creme"


def test_custom_separator():
    assert slugify("a b", separator="_") == "a_b"


def test_max_length():
    assert slugify("abcdef", max_length=3) == "abc"


def test_digits_are_kept():
    assert slugify("Python3") == "python3"
