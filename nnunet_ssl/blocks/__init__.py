"""Shared building blocks (losses, heads, queues): plain torch, no nnU-Net import."""
