"""Each paper architecture pinned: parameter counts from the paper's description, computed by hand here,
and output shapes at the input sizes the plugin declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uqbench.api import context_of
from uqbench.errors import UsageError
from uqbench.registry import registry


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _unet_by_hand(ch: tuple[int, ...], classes: int = 4) -> int:
    def block(cin: int, cout: int, norm: bool) -> int:
        n = (cin * 9 + 1) * cout + (cout * 9 + 1) * cout
        return n + (4 * cout if norm else 0)  # two instance norms with affine weight and bias

    total = block(1, ch[0], True) + sum(block(ch[i], ch[i + 1], True) for i in range(4))  # 4 levels + bottleneck
    total += sum(ch[i + 1] * ch[i] * 4 + ch[i] + block(2 * ch[i], ch[i], False) for i in range(4))  # up path
    return total + ch[0] * classes + classes


def _drn_by_hand(ch: tuple[int, ...], classes: int = 4) -> int:
    def conv(cin: int, cout: int, k: int = 3) -> int:
        return cin * cout * k * k + 2 * cout  # no bias; batch norm weight and bias

    def res(cin: int, cout: int) -> int:
        return conv(cin, cout) + conv(cout, cout) + (conv(cin, cout, 1) if cin != cout else 0)

    total = conv(1, ch[0], 7) + conv(ch[0], ch[0]) + conv(ch[0], ch[1])
    total += sum(res(ch[i - 1], ch[i]) + res(ch[i], ch[i]) for i in range(2, 6))
    total += conv(ch[5], ch[6]) + conv(ch[6], ch[7])
    return total + ch[7] * classes + classes


def test_unet_parameter_count_matches_the_description() -> None:
    model = registry().create("segmenter", "unet").build(in_channels=1, num_classes=4, dropout=0.1, width=1.0)
    assert _params(model) == _unet_by_hand((64, 128, 256, 512, 1024)) == 31_038_724


def test_unet_convolutions_start_he_normal_with_zero_bias_as_the_authors() -> None:
    """networks/RecursiveUNet.py (``weights_init``) draws every Conv2d from N(0, 2 / fan_in), biases 0, and leaves
    the transposed convolutions at PyTorch's default."""
    torch.manual_seed(0)
    model = registry().create("segmenter", "unet").build(in_channels=1, num_classes=4, dropout=0.1, width=0.5)
    convs = [m for m in model.modules() if type(m) is torch.nn.Conv2d]
    assert len(convs) == 19  # 9 blocks of two and the classifier
    for conv in convs:
        assert conv.bias is not None and not conv.bias.any()
    wide = max(convs, key=lambda m: m.weight.numel())  # 512 x 512 x 3 x 3 weights at half width
    fan_in = wide.weight[0].numel()
    assert wide.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.01)
    up = next(m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    assert up.bias is not None and up.bias.any()


def test_drn_parameter_count_matches_the_description() -> None:
    model = registry().create("segmenter", "drn").build(in_channels=1, num_classes=4, dropout=0.1, width=1.0)
    assert _params(model) == _drn_by_hand((16, 32, 64, 128, 256, 512, 512, 512))


def test_dn_parameter_count_matches_the_description() -> None:
    model = registry().create("segmenter", "dn").build(in_channels=1, num_classes=4, dropout=0.1, width=1.0)
    first = 1 * 32 * 9 + 32  # layer 1: bias, no batch norm
    dilated = 7 * (32 * 32 * 9 + 2 * 32)  # layers 2-8: batch norm
    fc = 32 * 128 + 2 * 128 + 128 * 4 + 4  # layer 9 (batch norm) and the classifier
    assert _params(model) == first + dilated + fc == 70_148


def test_dn_authors_plan_parameter_count_matches_their_dilatedcnn() -> None:
    """networks/dilatedcnn.py of toologicbv/cardiacSegUncertainty: channels 32 x 6, 64, 128 (3x3), 128 (1x1), a
    bias in every convolution, batch norm from layer 2 on."""
    model = registry().create("segmenter", "dn:authors").build(in_channels=1, num_classes=4, dropout=0.1, width=1.0)
    first = 1 * 32 * 9 + 32
    dilated = 5 * (32 * 32 * 9 + 32 + 2 * 32) + (32 * 64 * 9 + 64 + 2 * 64) + (64 * 128 * 9 + 128 + 2 * 128)
    fc = (128 * 128 + 128 + 2 * 128) + 128 * 4 + 4
    assert _params(model) == first + dilated + fc == 156_900
    kinds = [type(m).__name__ for m in model.modules() if not isinstance(m, torch.nn.Sequential)]
    assert kinds[:11] == ["DilatedCNN", "Conv2d", "ELU", "Dropout2d", "Conv2d", "ELU", "BatchNorm2d", "Dropout2d",
                          "Conv2d", "ReLU", "BatchNorm2d"]  # ELU in layers 1-2, activation before batch norm


def test_dn_with_an_unknown_plan_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match="segmenter 'dn:wide': bad arguments: unknown dn plan 'wide'"):
        registry().create("segmenter", "dn:wide")


@pytest.mark.parametrize("spec", ["dn", "dn:authors"])
def test_dn_receptive_field_is_131_voxels(spec: str) -> None:
    model = registry().create("segmenter", spec).build(in_channels=1, num_classes=4, dropout=0.0, width=1.0).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(0.01)  # positive weights, positive input: every ReLU passes, no path cancels
    x = torch.ones(1, 1, 301, 301, requires_grad=True)
    out = model(x)
    assert out.shape[-2:] == (301 - 130, 301 - 130)  # unpadded: it labels what lies 65 voxels inside its input
    out[0, 0, 150 - 65, 150 - 65].backward()
    assert x.grad is not None
    rows, cols = torch.nonzero(x.grad[0, 0].abs().sum(1)), torch.nonzero(x.grad[0, 0].abs().sum(0))
    assert rows.numel() == cols.numel() == 131 and rows.min().item() == 150 - 65


@pytest.mark.parametrize("name", ["drn", "dn", "unet"])
def test_output_has_input_size_less_the_context_at_each_declared_multiple(name: str) -> None:
    seg = registry().create("segmenter", name)
    c = context_of(seg)
    assert c == (65 if name == "dn" else 0)
    model = seg.build(in_channels=1, num_classes=4, dropout=0.1, width=0.125).eval()
    for k in (1, 2, 3):
        side = seg.size_multiple * k
        assert model(torch.zeros(1, 1, side + 2 * c, 2 * side + 2 * c)).shape == (1, 4, side, 2 * side)


@pytest.mark.parametrize(("name", "layers"), [("drn", 17), ("dn", 9), ("unet", 9)])
def test_dropout_is_channel_wise_where_the_authors_put_it_and_element_wise_when_narrowed(name: str,
                                                                                        layers: int) -> None:
    """The authors' networks/drn.py has 17 Dropout2d layers in DRN-D-22, networks/dilatedcnn.py one per layer
    but the classifier; our U-Net ends each of its 9 blocks with one (paper III-A)."""
    seg = registry().create("segmenter", name)
    for width, kind in ((1.0, torch.nn.Dropout2d), (0.125, torch.nn.Dropout)):
        model = seg.build(in_channels=1, num_classes=4, dropout=0.1, width=width)
        drops = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        assert len(drops) == layers and all(type(m) is kind for m in drops), (name, width)


def test_smp_adds_mc_dropout_to_decoder_and_head_of_any_architecture() -> None:
    for spec in ("smp:unet:resnet18", "smp:fpn:efficientnet-b0", "smp:unet:tu-resnet18"):
        model = registry().create("segmenter", spec).build(in_channels=1, num_classes=4, dropout=0.1)
        decoder_drop = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Dropout)]
        assert decoder_drop and isinstance(model.segmentation_head[0], torch.nn.Dropout), spec
        assert model.eval()(torch.zeros(1, 1, 64, 96)).shape == (1, 4, 64, 96)


def test_smp_loads_encoder_weights_only_from_a_local_file(tmp_path: Path) -> None:
    source = registry().create("segmenter", "smp:unet:resnet18").build(in_channels=1, num_classes=4, dropout=0.1)
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)
    loaded = registry().create("segmenter", f"smp:unet:resnet18:{path}").build(in_channels=1, num_classes=4,
                                                                                dropout=0.1)
    for a, b in zip(source.encoder.state_dict().values(), loaded.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(UsageError, match="no such file \\(weights are never downloaded\\)"):
        registry().create("segmenter", f"smp:unet:resnet18:{tmp_path / 'missing.pt'}")


@pytest.mark.parametrize(("spec", "message"), [("smp:unnet:resnet18", "unknown architecture 'unnet'"),
                                               ("smp:unet:resnet19", "unknown encoder 'resnet19'"),
                                               ("smp:unet:tu-nosuchnet", "unknown timm encoder 'nosuchnet'")])
def test_smp_bad_names_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        registry().create("segmenter", spec)
