"""The article's CNN, corrected (chapter 3 derives each fix)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class ConvNet(nn.Module):
    """The article's four-convolution MNIST classifier, made to run and to mean what
    it says.

    Layer order follows the article's `forward`: each 3x3 convolution is followed by
    its activation and a 2x2 max pool (28 -> 14 -> 7 -> 3 -> 1), then global average
    pooling, flatten(1) and a linear layer to 10 logits (no softmax:
    CrossEntropyLoss takes logits). `batchnorm` and `activation="relu6"` are the
    article's section 5.2 proposals, measured in chapter 4.
    """

    def __init__(self, num_classes: int = 10, batchnorm: bool = False,
                 activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            known = sorted(ACTIVATIONS)
            raise ValueError(f"activation must be one of {known}, got {activation!r}")
        self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(128, 128, kernel_size=3, padding=1)
        convs = [self.conv1, self.conv2, self.conv3, self.conv4]
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(c.out_channels) if batchnorm else nn.Identity()
            for c in convs
        )
        self.act = ACTIVATIONS[activation]()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.glob_avg = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional trunk: (N, 1, 28, 28) -> (N, 128, 1, 1)."""
        convs = (self.conv1, self.conv2, self.conv3, self.conv4)
        for conv, norm in zip(convs, self.norms, strict=True):
            x = self.pool(self.act(norm(conv(x))))
        return self.glob_avg(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, 28, 28) -> logits (N, num_classes)."""
        return self.fc(torch.flatten(self.features(x), 1))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class SmallNet(nn.Module):
    """The right-sized MNIST model of the optimization chapter: two convolutions and one hidden layer.

    conv 5x5 (1 -> `c1`) -> 2x2 max pool -> ReLU -> conv 3x3 (`c1` -> `c2`) -> max pool -> ReLU ->
    flatten -> linear (c2*5*5 -> `hidden`) -> ReLU -> linear (-> 10 logits). Pooling before the ReLU
    gives the same result as after it (max and ReLU commute) on a quarter of the values.
    """

    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 256, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3)
        self.fc1 = nn.Linear(c2 * 5 * 5, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.pool, self.act = nn.MaxPool2d(2), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, 28, 28) -> logits (N, num_classes): 28 -> 24 -> 12 -> 10 -> 5."""
        x = self.act(self.pool(self.conv1(x)))
        x = self.act(self.pool(self.conv2(x)))
        return self.fc2(self.act(self.fc1(torch.flatten(x, 1))))
