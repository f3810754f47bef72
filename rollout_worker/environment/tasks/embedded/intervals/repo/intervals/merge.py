"""Operations on lists of closed intervals given as (start, end) pairs."""


def merge(intervals):
    """Merge overlapping or touching intervals; returns a sorted list of disjoint (start, end) tuples."""
    merged = []
    for start, end in intervals:
        if start > end:
            raise ValueError(f"interval start {start} is after its end {end}")
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def total_length(intervals):
    """Length of the union of ``intervals``."""
    return sum(end - start for start, end in merge(intervals))


def contains(intervals, point):
    """True when ``point`` lies in any of ``intervals``."""
    return any(start <= point <= end for start, end in intervals)
