"""Shim for nnU-Net's nnUNet_extTrainer lookup: re-exports the real classes, defines none.

nnU-Net imports every module of this folder as a top-level name and drops it afterwards; the
classes it finds here are the canonical ones from nnunet_ssl.integration.trainers.
"""
from nnunet_ssl.integration.trainers import TRAINERS

globals().update(TRAINERS)
