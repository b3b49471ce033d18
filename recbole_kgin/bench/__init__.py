"""Benchmarks: ``python -m recbole_kgin.bench.<name>`` prints measured figures."""
