"""Where things are, for test modules at any depth of tests/ (conftest.py puts tests/ on sys.path)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = ROOT / "fixtures"
