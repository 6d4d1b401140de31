"""LRA tests."""
