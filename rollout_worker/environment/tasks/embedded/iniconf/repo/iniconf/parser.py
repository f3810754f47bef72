"""Parse INI text into nested dicts.

Rules:
- ``[section]`` headers open a section; keys before any header go to ``default_section``.
- ``key = value`` pairs; keys are lower-cased and both sides are stripped.
- Blank lines and lines starting with ``#`` or ``;`` are ignored.
"""


class ParseError(ValueError):
    """Raised for malformed input; carries the 1-based line number."""

    def __init__(self, lineno, message):
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


def parse(text, default_section="DEFAULT"):
    """Parse ``text`` and return ``{section: {key: value}}``."""
    result = {}
    section = default_section
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ParseError(lineno, "unterminated section header")
            section = line[1:-1].strip()
            if not section:
                raise ParseError(lineno, "empty section name")
            result.setdefault(section, {})
            continue
        if "=" not in line:
            raise ParseError(lineno, f"expected 'key = value', got {line!r}")
        key, value = line.split("=")
        key = key.strip().lower()
        if not key:
            raise ParseError(lineno, "empty key")
        result.setdefault(section, {})[key] = value.strip()
    return result
