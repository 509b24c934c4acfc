"""Registry of pretraining methods: feeds the ``-m`` choices and the contract tests."""
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods.base import DataGeometry, Hyperparameters, PretrainingMethod
from nnunet_ssl.methods.byol import BYOL
from nnunet_ssl.methods.gcl import GCL
from nnunet_ssl.methods.mae import MAE
from nnunet_ssl.methods.mlsscl import MLSSCL, MLSSCLConfig, MLSSCLLongShortOnly, MLSSCLMultiviewOnly
from nnunet_ssl.methods.models_genesis import ModelsGenesis
from nnunet_ssl.methods.moco import MoCo
from nnunet_ssl.methods.pcl import PCL, PCLConfig
from nnunet_ssl.methods.simclr import SimCLR

METHODS: dict[str, type[PretrainingMethod]] = {m.name: m for m in (
    PCL, SimCLR, GCL, MLSSCL, MLSSCLMultiviewOnly, MLSSCLLongShortOnly, MAE, ModelsGenesis, MoCo, BYOL)}


def list_methods() -> list[str]:
    return sorted(METHODS)


def require_methods(names: list[str], option: str = "-m", also: tuple[str, ...] = ()) -> None:
    """One clear error for every command that takes method names; ``also`` lists extra accepted names."""
    unknown = [n for n in names if n not in METHODS and n not in also]
    if unknown:
        allowed = [*also, *list_methods()]
        raise SSLUserError(f"unknown method(s) {unknown}.", f"use {option} with one or more of {allowed}")


def get_method(name: str) -> type[PretrainingMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown pretraining method {name!r}; choose one of {list_methods()}") from None


__all__ = ["METHODS", "DataGeometry", "Hyperparameters", "PretrainingMethod", "PCL", "PCLConfig", "SimCLR", "GCL", "MLSSCL", "MLSSCLConfig", "MAE", "ModelsGenesis", "MoCo",
           "BYOL", "get_method", "list_methods", "require_methods"]
