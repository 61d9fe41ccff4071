"""The CIFAR WideResNet of B5, so that the benchmark needs no RobustBench (nor the 42 MB of pyautoattack,
gdown, geotorch and ``pkg_resources`` that importing it brings).

WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", 2016) in the pre-activation form of RobustBench's
CIFAR-10 ``Standard`` classifier (WRN-28-10, 36,479,194 parameters): a 3x3 stem to 16 channels, three stages of
``(d - 4) / 6`` residual units at 16k, 32k and 64k channels (the 2nd and 3rd stages start with stride 2), each unit
``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` plus its input, with a 1x1 projection where the width changes; then
BN-ReLU, global average pooling and a linear layer. Where a unit projects, the projection takes the unit's
*activated* input (the first BN-ReLU is shared); where it does not, the raw input is added.

The parameter names follow RobustBench's (``block2.layer.0.convShortcut.weight`` etc.), so its state dict loads
here unchanged (tested where RobustBench is installed). B5 uses random weights: only the architecture matters.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Parameters of WRN-28-10 for 10 classes (RobustBench's CIFAR-10 ``Standard`` model).
WRN_28_10_PARAMETERS = 36_479_194


class _Unit(nn.Module):
    """One pre-activation residual unit (two 3x3 convolutions)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_in == c_out and stride != 1:
            raise ValueError("a unit that keeps its width keeps its resolution")
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.convShortcut = (None if c_in == c_out
                             else nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, padding=0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        residual = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return (x if self.convShortcut is None else self.convShortcut(pre)) + residual


class _Stage(nn.Module):
    """``units`` residual units; the first changes width and stride."""

    def __init__(self, units: int, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[_Unit(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                     for i in range(units)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 3-channel images (32x32 in B5); logits for ``num_classes`` classes."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
        units = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = _Stage(units, widths[0], widths[1], 1)
        self.block2 = _Stage(units, widths[1], widths[2], 2)
        self.block3 = _Stage(units, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # He initialisation (fan-out), unit BN scales, zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(self.conv1(x))))
        h = F.relu(self.bn1(h))
        return self.fc(h.mean(dim=(2, 3)))
