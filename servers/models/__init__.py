"""Tiny offline models built from configs (random weights, fixed seed), cached on disk.

Nothing is downloaded: tokenizers are trained on local text (the Python
standard library's sources), weights come from a seeded random init. The
registry of builders is :data:`servers.models.cli.BUILDERS`.
"""
