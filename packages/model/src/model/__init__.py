"""FLAM toolkit — `model` package."""

__version__ = "0.1.0"
