"""Immich ML Desktop: Immich's machine-learning models on your workstation."""

__version__ = "0.1.0"
