"""Build exactly the network nnU-Net plans for a configuration, and fingerprint its encoder."""
import hashlib
import json

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn


def build_planned_network(plans_manager: PlansManager, configuration: ConfigurationManager, dataset_json: dict,
                          num_input_channels: int) -> nn.Module:
    """The full U-Net, through the same static method nnUNetv2_train and nnUNetv2_predict call."""
    num_outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    return nnUNetTrainer.build_network_architecture(plans_manager, configuration, num_input_channels,
                                                    num_outputs, enable_deep_supervision=True)


def build_reconstruction_network(plans_manager: PlansManager, configuration: ConfigurationManager,
                                 num_input_channels: int) -> nn.Module:
    """The same U-Net for reconstruction pretraining: the segmentation output layers become one output
    channel per input channel (the only layers that differ), and deep supervision is off, so the network
    returns only its full-resolution output."""
    return nnUNetTrainer.build_network_architecture(plans_manager, configuration, num_input_channels,
                                                    num_input_channels, enable_deep_supervision=False)


def bottleneck_channels(configuration: ConfigurationManager) -> int:
    return int(configuration.network_arch_init_kwargs["features_per_stage"][-1])


def architecture_description(configuration: ConfigurationManager) -> dict:
    return {"network_class_name": configuration.network_arch_class_name,
            "arch_kwargs": configuration.network_arch_init_kwargs,
            "_kw_requires_import": list(configuration.network_arch_init_kwargs_req_import)}


def architecture_hash(configuration: ConfigurationManager) -> str:
    """sha256 of the plans' architecture entry (class, kwargs), stable across key order."""
    return description_hash(architecture_description(configuration))


def description_hash(description: dict) -> str:
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# arch_kwargs that only the decoder uses: a difference there does not touch the pretrained encoder
DECODER_ONLY_FIELDS = ("n_conv_per_stage_decoder", "deep_supervision")


def comparable_description(configuration: ConfigurationManager) -> dict:
    """The architecture description as stored in checkpoint metadata (JSON types, classes as text)."""
    return json.loads(json.dumps(architecture_description(configuration), default=str))


def architecture_differences(stored: dict, current: dict) -> list[str]:
    """``"field: stored -> current"`` for every differing entry of two architecture descriptions
    (arch_kwargs flattened one level), decoder-only fields left out."""
    def flat(description: dict) -> dict:
        values = {k: v for k, v in description.items() if k != "arch_kwargs"}
        values.update(description.get("arch_kwargs", {}))
        return values

    a, b = flat(stored), flat(current)
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
            if k not in DECODER_ONLY_FIELDS and a.get(k) != b.get(k)]
