"""Comparisons, tuned comparisons, hyper-parameter searches and their statistics."""
