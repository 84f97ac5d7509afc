"""The two models of the course, built by name from the config."""

from __future__ import annotations

import torch
from torch import nn

from shared.config import CNNConfig, MLPConfig


class MLP(nn.Module):
    """784 -> hidden... -> 10. One epoch on the tensor path takes about a second on 2 cores."""

    def __init__(self, hidden_sizes: list[int] = (128,), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)  # logits, shape (batch, 10)


class CNN(nn.Module):
    """Two convolution blocks (5x5, then 3x3, each with 2x2 max-pooling), one hidden layer.

    The shape of tuomaso/train_mnist_fast's record net, kept lab-sized. With the default
    config ([24, 32] channels, fc 128, ~0.11 M parameters) it reaches about 99 % test accuracy in
    about one epoch, a few seconds on a 2-core CPU (`workbook bench`). Each choice below was
    measured on 2 CPU cores (configs/default.yaml's comments and docs/speed.md give the numbers).
    """

    def __init__(
        self,
        channels: list[int] = (24, 32),
        fc: int = 128,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        c1, c2 = channels

        def block(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
            # No padding: the border of an MNIST digit is blank, so padding only adds work.
            # A conv followed by BatchNorm needs no bias (BatchNorm's shift replaces it).
            conv = nn.Conv2d(c_in, c_out, kernel, bias=not batch_norm)
            norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
            # Max-pool *before* ReLU: the same result (both keep the largest value), with
            # ReLU run on a quarter of the numbers.
            return [conv, *norm, nn.MaxPool2d(2), nn.ReLU()]

        # 28x28 -5x5-> 24x24 -pool-> 12x12 -3x3-> 10x10 -pool-> 5x5. A 5x5 first layer sees
        # a whole pen stroke at once: +0.2 % after one epoch over a 3x3 one.
        self.features = nn.Sequential(*block(1, c1, 5), *block(c1, c2, 3))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, fc),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(fc, 10),
        )

    def forward(self, x):
        if x.dim() == 3:  # (batch, 28, 28) -> (batch, 1, 28, 28)
            x = x.unsqueeze(1)
        # channels_last ("NHWC") lets the CPU's convolution library (oneDNN) skip reordering
        # every activation: one epoch took 6.4 s instead of 10.4 s on 2 cores. The weights
        # follow (``model.to(memory_format=...)`` in ``build_model``); the result is the same.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.classifier(self.features(x))


def build_model(cfg: MLPConfig | CNNConfig) -> nn.Module:
    """The model the config names, with its sizes."""
    if cfg.name == "mlp":
        return MLP(list(cfg.hidden_sizes), cfg.dropout)
    if cfg.name == "cnn":
        model = CNN(list(cfg.channels), cfg.fc, cfg.dropout, cfg.batch_norm)
        return model.to(memory_format=torch.channels_last)  # see CNN.forward
    raise ValueError(f"unknown model {cfg.name!r}")  # unreachable: the schema checks names


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
