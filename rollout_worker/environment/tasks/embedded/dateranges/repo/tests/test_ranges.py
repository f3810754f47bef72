from datetime import date

import pytest

from dateranges import date_range, month_starts, overlaps


def test_step_that_does_not_land_on_end():
    days = list(date_range(date(2024, 1, 1), date(2024, 1, 9), step_days=3))
    assert days == [date(2024, 1, 1), date(2024, 1, 4), date(2024, 1, 7)]


def test_invalid_step():
    with pytest.raises(ValueError):
        list(date_range(date(2024, 1, 1), date(2024, 1, 2), step_days=0))


def test_empty_when_end_before_start():
    assert list(date_range(date(2024, 1, 5), date(2024, 1, 1))) == []


def test_month_starts_across_year_end():
    assert month_starts(date(2023, 11, 15), date(2024, 2, 1)) == [
        date(2023, 12, 1), date(2024, 1, 1), date(2024, 2, 1)]


def test_overlaps_is_inclusive():
    assert overlaps(date(2024, 1, 1), date(2024, 1, 5), date(2024, 1, 5), date(2024, 1, 9))
    assert not overlaps(date(2024, 1, 1), date(2024, 1, 4), date(2024, 1, 5), date(2024, 1, 9))
