"""Greedy word wrapping. Lines hold at most ``width`` characters; longer words get a line of their own."""


def wrap(text, width=70):
    """Split ``text`` into lines of at most ``width`` characters, breaking only at whitespace."""
    if width < 1:
        raise ValueError("width must be >= 1")
    lines = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) < width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def fill(text, width=70):
    """``wrap`` joined with newlines."""
    return "\n".join(wrap(text, width))


def shorten(text, width, placeholder=" [...]"):
    """Collapse whitespace and cut ``text`` at a word boundary so that the result fits in ``width``."""
    words = text.split()
    joined = " ".join(words)
    if len(joined) <= width:
        return joined
    kept = []
    for word in words:
        if len(" ".join(kept + [word])) + len(placeholder) > width:
            break
        kept.append(word)
    return " ".join(kept) + placeholder
