import pytest

from intervals import contains, merge, total_length


def test_sorted_overlapping():
    assert merge([(1, 3), (2, 5), (7, 9)]) == [(1, 5), (7, 9)]


def test_touching_intervals_merge():
    assert merge([(1, 3), (3, 4)]) == [(1, 4)]


def test_nested_interval():
    assert merge([(1, 10), (2, 3)]) == [(1, 10)]


def test_empty_input():
    assert merge([]) == [] and total_length([]) == 0


def test_invalid_interval():
    with pytest.raises(ValueError):
        merge([(3, 1)])


def test_contains():
    assert contains([(1, 2), (5, 6)], 5.5)
    assert not contains([(1, 2), (5, 6)], 3)
