from urlquery import build_query, build_url


def test_simple_pairs():
    assert build_query({"page": 2, "sort": "name"}) == "page=2&sort=name"


def test_spaces_become_plus():
    assert build_query({"q": "hello world"}) == "q=hello+world"


def test_none_is_dropped():
    assert build_query({"a": None, "b": 1}) == "b=1"


def test_lists_repeat_the_key():
    assert build_query({"tag": ["x", "y"]}) == "tag=x&tag=y"


def test_booleans():
    assert build_query({"debug": True, "cache": False}) == "debug=true&cache=false"


def test_build_url():
    assert build_url("https://h/p", {"a": 1}) == "https://h/p?a=1"
    assert build_url("https://h/p?x=0", {"a": 1}) == "https://h/p?x=0&a=1"
    assert build_url("https://h/p", {}) == "https://h/p"
