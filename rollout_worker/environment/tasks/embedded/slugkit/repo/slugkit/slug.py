"""slugify(): ASCII-only, lower-case slugs for URLs and file names."""

import re
import unicodedata


def slugify(text, separator="-", max_length=None):
    """Return a slug of ``text``: accents folded to ASCII, lower case, non-alphanumerics replaced by ``separator``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]", separator, ascii_text.lower())
    if max_length is not None:
        slug = slug[:max_length]
    return slug
