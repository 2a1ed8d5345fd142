"""Tilemore's built-in operators and the example "Denoised" pipelines.

Installed as the ``tilemore_operators`` package; each module holds one family of operators.
"""
