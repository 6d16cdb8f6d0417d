"""Adapters for public annotated spine imaging (read from a user-given folder; nothing committed)."""
