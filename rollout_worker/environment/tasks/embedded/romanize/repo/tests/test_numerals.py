import pytest

from romanize import from_roman, to_roman


@pytest.mark.parametrize("number,numeral", [(1, "I"), (4, "IV"), (9, "IX"), (14, "XIV"), (40, "XL"),
                                            (1994, "MCMXCIV"), (3999, "MMMCMXCIX")])
def test_to_roman(number, numeral):
    assert to_roman(number) == numeral


@pytest.mark.parametrize("bad", [0, 4000, -3])
def test_to_roman_out_of_range(bad):
    with pytest.raises(ValueError):
        to_roman(bad)


def test_from_roman_additive():
    assert from_roman("VIII") == 8
    assert from_roman("mdclxvi") == 1666


def test_from_roman_rejects_bad_symbols():
    with pytest.raises(ValueError):
        from_roman("XIZ")
    with pytest.raises(ValueError):
        from_roman("  ")
