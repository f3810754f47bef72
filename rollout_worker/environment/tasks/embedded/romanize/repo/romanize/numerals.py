"""Conversions between ints (1..3999) and canonical Roman numerals."""

_PAIRS = [
    ("M", 1000), ("CM", 900), ("D", 500), ("CD", 400),
    ("C", 100), ("XC", 90), ("L", 50), ("XL", 40),
    ("X", 10), ("IX", 9), ("V", 5), ("IV", 4), ("I", 1),
]
_SYMBOLS = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def to_roman(number):
    """Return the canonical numeral for ``number`` (1..3999)."""
    if not isinstance(number, int) or isinstance(number, bool):
        raise TypeError("number must be an int")
    if not 1 <= number <= 3999:
        raise ValueError("number must be in 1..3999")
    out = []
    for symbol, value in _PAIRS:
        count, number = divmod(number, value)
        out.append(symbol * count)
    return "".join(out)


def from_roman(numeral):
    """Return the integer value of a Roman numeral (case-insensitive)."""
    text = numeral.strip().upper()
    if not text:
        raise ValueError("empty numeral")
    total = 0
    for char in text:
        if char not in _SYMBOLS:
            raise ValueError(f"invalid Roman numeral symbol: {char!r}")
        total += _SYMBOLS[char]
    return total
