"""vLLM with jouletrace attached: launcher, stat-logger plugin, demo stack.

``plugin.py`` runs inside vLLM's own environment (``.venv-vllm``) and imports
only the standard library and vLLM; the rest runs in the sidecar's ``.venv``
and starts vLLM as a separate process.
"""
