"""jouletrace's Grafana dashboards, generated with Grafana's own Python SDK.

``python -m dashboards.generate`` writes ``dashboards/*.json`` (committed) and the Helm chart's
copies; tests/ops regenerates and compares.
"""
