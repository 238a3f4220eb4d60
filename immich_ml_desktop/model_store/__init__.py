"""The model store: Immich's catalogue, downloads from the hub (or a mirror), verification, import of packs a
user already has, and export of open_clip models into Immich's layout. Inference (`models/`) never imports it."""
