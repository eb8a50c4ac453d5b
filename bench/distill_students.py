"""Students for bench/distill.py that the user would write: ``onnxopt distill --student FILE:FUNCTION``.

``digits_separable``: for the 8x8 digits, 448 parameters (the fixture CNN has 1978): a 3x3 conv to 4
channels, then a depthwise 3x3 + pointwise 1x1 conv to 8 channels instead of a full 3x3 conv, so the
parameters go where the digits CNN spends them least wastefully (the 32 -> 10 classifier).
"""

from __future__ import annotations

import torch
from torch import nn


def digits_separable() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.Conv2d(4, 8, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 10),
    )  # fmt: skip
