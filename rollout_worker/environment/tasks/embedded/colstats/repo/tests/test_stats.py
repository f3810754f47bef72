import math

import pytest

from colstats import median, read_column, summarize

CSV = "name,score,age\nann,3.5,31\nbob,,40\ncid,1.5,22\ndan,2,35\n"


def test_read_column_skips_blank_cells():
    assert read_column(CSV, "score") == [3.5, 1.5, 2.0]


def test_unknown_column():
    with pytest.raises(KeyError):
        read_column(CSV, "height")


def test_median_odd_count():
    assert median([5, 1, 3]) == 3


def test_median_empty():
    with pytest.raises(ValueError):
        median([])


def test_summarize_odd_count():
    stats = summarize([2.0, 4.0, 9.0])
    assert stats["count"] == 3 and stats["mean"] == 5.0 and stats["median"] == 4.0
    assert (stats["min"], stats["max"]) == (2.0, 9.0)
    assert math.isclose(stats["stdev"], math.sqrt(13.0))
