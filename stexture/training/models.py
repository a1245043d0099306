"""ResNet-style image classifiers in plain torch (there is no torchvision on these machines).

Both models are stacks of basic residual blocks (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016): ``out = relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``, with a
1x1 convolution + batch norm as the shortcut where the stride or the width changes.

``resnet18``
    the ImageNet layout of the paper: 7x7/2 stem, 3x3/2 max pool, four stages of two blocks
    with widths 64, 128, 256, 512 (11,689,512 parameters at 1000 classes, as torchvision's).
``small``
    a 3x3/2 stem and three stages of one block (widths 32, 64, 128; 0.31 M parameters at 10
    classes), which trains in minutes on two CPU cores at 64-96 px.

The last batch norm of every residual branch starts at zero, so each block starts as the
identity (Goyal et al., "Accurate, Large Minibatch SGD", 2017, section 5.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["MODELS", "BasicBlock", "ResNet", "build_model", "resnet18", "small_resnet"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, stages of :class:`BasicBlock` (the first block of a stage may stride), global
    average pooling and a linear classifier ``fc``."""

    def __init__(
        self,
        stem: nn.Module,
        stem_channels: int,
        widths: Sequence[int],
        blocks: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not len(widths) == len(blocks) == len(strides):
            raise ValueError("widths, blocks and strides must have one entry per stage")
        self.stem = stem
        stages = []
        channels = stem_channels
        for width, count, stride in zip(widths, blocks, strides, strict=True):
            layers = [BasicBlock(channels, width, stride)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def resnet18(num_classes: int) -> ResNet:
    """ResNet-18 in the ImageNet layout of He et al. (2016), table 1."""
    stem = nn.Sequential(*_conv_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    return ResNet(stem, 64, (64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2), num_classes)


def small_resnet(num_classes: int) -> ResNet:
    """A three-stage, one-block-per-stage ResNet for quick sweeps at 64-96 px on a CPU."""
    stem = nn.Sequential(*_conv_bn_relu(3, 32, 3, 2))
    return ResNet(stem, 32, (32, 64, 128), (1, 1, 1), (1, 2, 2), num_classes)


MODELS: dict[str, Callable[[int], ResNet]] = {"small": small_resnet, "resnet18": resnet18}


def build_model(name: str, num_classes: int) -> ResNet:
    """The model called ``name`` (a key of :data:`MODELS`) with ``num_classes`` outputs."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name](num_classes)
