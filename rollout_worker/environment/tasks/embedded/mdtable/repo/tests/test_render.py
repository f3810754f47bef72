import pytest

from mdtable import render_table


def test_basic_table():
    out = render_table(["name", "qty"], [["apple", 3], ["kiwi", 12]])
    assert out.splitlines() == [
        "| name  | qty |",
        "| ----- | --- |",
        "| apple | 3   |",
        "| kiwi  | 12  |",
    ]


def test_alignment_rules():
    out = render_table(["a", "b", "c"], [[1, 2, 3]], align=["left", "right", "center"])
    assert out.splitlines()[1] == "| :-- | --: | :-: |"


def test_none_and_newlines():
    out = render_table(["x"], [[None], ["two\nlines"]])
    assert out.splitlines()[2:] == ["|           |", "| two lines |"]


def test_row_length_mismatch():
    with pytest.raises(ValueError, match="row 2"):
        render_table(["a", "b"], [[1, 2], [3]])
