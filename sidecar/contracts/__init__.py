"""Stable public formats between jouletrace's parts and the outside (stdlib only)."""
