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
    model = ConvNet(**kwargs)
    assert model(torch.randn(8, 1, 28, 28)).shape == (8, 10)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        ConvNet(activation="gelu")
