"""nnunet-ssl: self-supervised pretraining (PCL, MLSSCL, MAE, Models Genesis, MoCo v2, BYOL) for nnU-Net v2.

Kept import-free on purpose: the start-up hook imports this package in every Python process.
"""
__version__ = "0.1.0"
