"""Helpers shared by several test modules (``tests/`` is put on ``sys.path`` by conftest.py,
since test modules imported in pytest's importlib mode cannot import one another)."""
