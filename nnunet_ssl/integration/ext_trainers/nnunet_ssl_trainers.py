"""Shim for nnU-Net's nnUNet_extTrainer lookup: defines no class of its own.

nnU-Net imports every module of this folder as a top-level name, asks ``hasattr(module, name)`` and
drops the module afterwards; ``__getattr__`` answers with the canonical class from
nnunet_ssl.integration.trainers.registry (made on first request, cached there).
"""
from nnunet_ssl.integration.trainers.registry import __getattr__  # noqa: F401
