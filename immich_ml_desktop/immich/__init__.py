"""Talking to Immich (outbound): its public REST API client and the API key store."""
