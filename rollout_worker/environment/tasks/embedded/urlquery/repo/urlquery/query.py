"""Form-encoded query strings from Python values.

``None`` values are dropped, lists/tuples repeat the key, booleans become ``true``/``false``.
"""


def _encode(value):
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return text.replace(" ", "+")


def build_query(params):
    """Return ``params`` (a mapping) as an ``application/x-www-form-urlencoded`` query string."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        parts.extend(f"{_encode(key)}={_encode(item)}" for item in values if item is not None)
    return "&".join(parts)


def build_url(base, params):
    """Append ``params`` to ``base``, which may already carry a query string."""
    query = build_query(params)
    if not query:
        return base
    return f"{base}{'&' if '?' in base else '?'}{query}"
