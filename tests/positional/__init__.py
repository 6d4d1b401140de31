"""Positional encoding tests: each encoding against a reference written in its test file or the
property its paper states."""
