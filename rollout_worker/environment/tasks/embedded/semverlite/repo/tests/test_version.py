import pytest

from semverlite import Version


def test_parse_and_str_roundtrip():
    for text in ["0.1.0", "1.2.3", "1.2.3-beta.2", "1.2.3+build.7", "2.0.0-rc.1+sha.abc"]:
        assert str(Version.parse(text)) == text


def test_invalid_versions_raise():
    for text in ["1.2", "01.2.3", "1.2.3-", "v1.2.3", ""]:
        with pytest.raises(ValueError):
            Version.parse(text)


def test_core_versions_compare_numerically():
    assert Version.parse("1.2.3") < Version.parse("1.10.0")
    assert Version.parse("2.0.0") > Version.parse("1.99.99")


def test_build_metadata_is_ignored_in_comparisons():
    assert Version.parse("1.0.0+a") == Version.parse("1.0.0+b")


def test_bump():
    v = Version.parse("1.2.3-rc.1")
    assert str(v.bump("major")) == "2.0.0"
    assert str(v.bump("minor")) == "1.3.0"
    assert str(v.bump("patch")) == "1.2.4"
    with pytest.raises(ValueError):
        v.bump("build")
