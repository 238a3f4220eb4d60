"""The Immich-compatible ML HTTP server (inbound: Immich calls us): `/ping` and `/predict` on the Engine."""
