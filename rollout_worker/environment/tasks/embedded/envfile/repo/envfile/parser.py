"""parse_env(): KEY=VALUE lines, comments, optional ``export`` prefix."""


def parse_env(text):
    """Return the variables defined in dotenv ``text`` as a dict (later definitions win)."""
    env = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"line {lineno}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env[key] = value
    return env
