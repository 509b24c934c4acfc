"""The only layer that knows nnU-Net internals (kept import-light: discovery runs at start-up)."""
