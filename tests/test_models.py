"""The corrected CNN: shapes, parameter count, options."""

import pytest
import torch

from accelbook.models import ConvNet, count_parameters


@pytest.mark.parametrize("batch", [1, 63, 64, 256])
def test_logits_shape_for_any_batch(batch):
    model = ConvNet().eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)


def test_samples_do_not_mix():
    """Changing one image changes only that image's logits (the article's view() bug mixes them)."""
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.randn(64, 1, 28, 28)
    y = x.clone()
    y[5] = torch.randn(1, 28, 28)
    with torch.no_grad():
        a, b = model(x), model(y)
    changed = (a - b).abs().amax(dim=1) > 0
    assert changed.tolist() == [i == 5 for i in range(64)]


def test_parameter_count_matches_layer_arithmetic():
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    expected = conv(1, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128) + 128 * 10 + 10
    assert count_parameters(ConvNet()) == expected


@pytest.mark.parametrize("kwargs", [{"batchnorm": True}, {"activation": "relu6"}])
def test_section_5_2_variants_run(kwargs):
    """Each variant runs, and computes something else than the plain model with the same weights."""
    torch.manual_seed(0)
    plain = ConvNet()
    torch.manual_seed(0)
    variant = ConvNet(**kwargs)  # BatchNorm and ReLU6 draw no random numbers: the same weights as `plain`
    weights = variant.state_dict()
    assert all(torch.equal(w, weights[k]) for k, w in plain.state_dict().items())
    x = 100 * torch.randn(8, 1, 28, 28)  # large inputs: pre-activations pass 6, and the batch is far from N(0, 1)
    out = variant(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    assert not torch.allclose(plain(x), out), f"ConvNet(**{kwargs}) computes what ConvNet() computes"


def test_batchnorm_variant_normalizes_every_convolution():
    """Four BatchNorm2d layers, one per convolution, and they are in the forward path."""
    torch.manual_seed(0)
    plain = ConvNet()
    torch.manual_seed(0)
    normed = ConvNet(batchnorm=True)
    assert [type(m).__name__ for m in normed.norms] == ["BatchNorm2d"] * 4
    assert [m.num_features for m in normed.norms] == [64, 64, 128, 128]
    x = torch.randn(8, 1, 28, 28)
    assert not torch.allclose(plain(x), normed(x))  # same weights (seeded): only the normalization differs
    assert all(int(m.num_batches_tracked) == 1 for m in normed.norms)


def test_relu6_variant_clips_at_six_and_nowhere_else():
    """Same weights: the two variants agree on inputs that keep every pre-activation below 6, not on large ones."""
    torch.manual_seed(0)
    relu = ConvNet().eval()
    torch.manual_seed(0)
    relu6 = ConvNet(activation="relu6").eval()
    assert isinstance(relu6.act, torch.nn.ReLU6)
    small = torch.randn(4, 1, 28, 28) * 0.01
    assert torch.equal(relu(small), relu6(small))
    assert not torch.allclose(relu(small * 1e4), relu6(small * 1e4))


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        ConvNet(activation="gelu")
