"""Talking to Immich: its ML service protocol (`MlServer`) and, later, its public API."""
