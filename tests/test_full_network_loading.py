"""Full-network loading (SSLInitTrainer_fullNetwork): encoder and decoder from a reconstruction checkpoint,
the segmentation output layers random, on PlainConvUNet and ResidualEncoderUNet."""
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from test_encoder_loader import COMMON, make_meta

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.checkpoint import decoder_weights, save_encoder_checkpoint
from nnunet_ssl.integration.encoder_loader import load_pretrained_network


def build(arch, seed, num_classes, deep_supervision, features=(4, 8, 16)):
    torch.manual_seed(seed)
    kwargs = {**COMMON, "num_classes": num_classes, "deep_supervision": deep_supervision}
    if arch == "PlainConvUNet":
        return PlainConvUNet(input_channels=1, features_per_stage=list(features), n_conv_per_stage=2, **kwargs)
    return ResidualEncoderUNet(input_channels=1, features_per_stage=list(features), n_blocks_per_stage=[1, 1, 1],
                               **kwargs)


def pretrained_checkpoint(tmp_path, arch, features=(4, 8, 16)) -> tuple[str, torch.nn.Module]:
    """A 'reconstruction' network (1 output per input channel, no deep supervision) with perturbed weights, saved."""
    network = build(arch, 0, 1, False, features)
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        for p in network.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    path = str(tmp_path / "checkpoint_final.pth")
    save_encoder_checkpoint(path, network.encoder.state_dict(), make_meta(), decoder_weights(network))
    return path, network


@pytest.mark.parametrize("arch", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_loads_encoder_and_decoder_but_not_the_output_layers(tmp_path, arch):
    path, source = pretrained_checkpoint(tmp_path, arch)
    saved = torch.load(path, weights_only=True)
    assert saved["decoder_state_dict"] and not any(k.startswith(("encoder.", "seg_layers."))
                                                   for k in saved["decoder_state_dict"])
    target = build(arch, 1, 3, True)  # 3 classes with deep supervision: the output layers differ in shape
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_pretrained_network(target, path, rescale=False)  # exact copies: no He rescale
    after, expected = target.state_dict(), source.state_dict()
    for key in after:
        if key.startswith("decoder.seg_layers."):
            assert torch.equal(after[key], before[key]), key  # random init kept
        else:
            assert torch.equal(after[key], expected[key]), key  # encoder, its alias and the decoder
    seg_keys = sorted(k for k in after if k.startswith("decoder.seg_layers."))
    assert report.random_keys == seg_keys and len(seg_keys) == 2 * 2  # weight + bias of 2 output layers
    assert report.decoder_loaded == sorted(f"decoder.{k}" for k in saved["decoder_state_dict"])
    assert any(k.startswith("decoder.transpconvs.") for k in report.decoder_loaded)
    summary = report.summary()
    assert "encoder and decoder" in summary and "decoder.seg_layers.0.weight" in summary


def test_refuses_a_checkpoint_without_decoder(tmp_path):
    network = build("PlainConvUNet", 0, 1, False)
    path = str(tmp_path / "encoder_only.pth")
    save_encoder_checkpoint(path, network.encoder.state_dict(), make_meta())
    with pytest.raises(SSLUserError) as excinfo:
        load_pretrained_network(build("PlainConvUNet", 1, 2, True), path)
    assert "no decoder" in excinfo.value.problem and "SSLInitTrainer" in excinfo.value.fix


def test_refuses_a_decoder_of_another_shape(tmp_path):
    # same encoder, decoder convs of another width: build a source with wider last decoder stage is not possible
    # with nnU-Net's symmetric decoder, so corrupt one decoder tensor's shape in the checkpoint instead
    path, _ = pretrained_checkpoint(tmp_path, "PlainConvUNet")
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["decoder_state_dict"] if k.startswith("stages.0.convs.0.conv.weight"))
    state["decoder_state_dict"][key] = torch.zeros(3, 3, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(SSLUserError) as excinfo:
        load_pretrained_network(build("PlainConvUNet", 1, 2, True), path)
    assert key in excinfo.value.problem and "decoder" in excinfo.value.problem


@pytest.mark.parametrize("arch", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_mae_trains_the_whole_network_and_saves_the_decoder_without_output_layers(arch):
    from test_methods_contract import geometry

    from nnunet_ssl.methods import MAE
    from nnunet_ssl.methods.mae import MAEConfig
    network = build(arch, 0, 1, False)  # as build_reconstruction_network makes it: 1 output, no deep supervision
    method = MAE(network, 16, MAEConfig(), geometry())
    loss, _ = method.training_step({"image": torch.randn(2, 1, 16, 32, 32)})
    loss.backward()
    assert network.decoder.seg_layers[-1].weight.grad.abs().sum() > 0  # the full-resolution output trains
    assert all(p.grad is None and not p.requires_grad for layer in network.decoder.seg_layers[:-1]
               for p in layer.parameters())  # the unused deep-supervision outputs are frozen
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.decoder.stages.parameters())
    saved = decoder_weights(network)
    assert saved and not any(k.startswith(("encoder.", "seg_layers.")) for k in saved)
