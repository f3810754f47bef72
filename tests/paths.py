"""Where the tests find the repository and their own data, wherever a test file sits in the tree."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
FIXTURES = TESTS / "fixtures"
AGENTS = TESTS / "agents"
