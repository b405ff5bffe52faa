"""Compatibility modules: import paths that existing clients use."""
