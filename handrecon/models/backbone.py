"""ResNet backbones in torchvision's layout (the original networks' names), with pretrained weights only from a local file."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..errors import UserError

# name -> (block, blocks per stage, planes per stage, stem channels). The torchvision layout
# (conv1, bn1, layer1..layer4), so torchvision/timm ResNet weights and InterWild's
# `ResNetBackbone` parameters share the names; `resnet_tiny` is a small one for tests and CPU runs.
RESNETS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), 64),
    "resnet34": (BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet101": (Bottleneck, (3, 4, 23, 3), (64, 128, 256, 512), 64),
    "resnet152": (Bottleneck, (3, 8, 36, 3), (64, 128, 256, 512), 64),
    "resnet_tiny": (BasicBlock, (1, 1, 1, 1), (32, 48, 96, 96), 32),
}


#: torchvision's ImageNet weight files (IMAGENET1K_V1) of each ResNet, named in the missing-file error
TORCHVISION_FILES = {
    "resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth", "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth", "resnet152": "resnet152-394f9c45.pth",
}  # fmt: skip


class ResNet(nn.Module):
    """A torchvision-layout ResNet, by default without its classifier: 7x7 stem (conv1, bn1), max-pool, four stages (stride 32).

    `stem` overrides the stem's channel count (the first stage then adapts by a 1x1 projection
    where it differs). ``forward(x, late=True)`` skips the stem and max-pool: the four stages read
    a (B, stem, H, W) map directly (stride 8), as InterWild's relative-translation branch does.
    `classifier` keeps torchvision's 1000-way `fc` layer: never run, only so a network that
    carries it (DIR's backbone) has its parameters and keys. `stages(x)` returns the output of
    each of the four stages (strides 4, 8, 16, 32).
    """

    def __init__(self, name: str, pretrained: str | Path = "", stem: int | None = None, classifier: bool = False):
        super().__init__()
        if name not in RESNETS:
            raise UserError(f"unknown backbone '{name}'; choose one of {sorted(RESNETS)}")
        block, blocks, planes, stem_default = RESNETS[name]
        self.name = name
        c = stem_default if stem is None else stem
        self.stem_channels = c
        self.conv1 = nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, (n, p) in enumerate(zip(blocks, planes)):
            stride = 1 if i == 0 else 2
            out = p * block.expansion
            down = None
            if stride != 1 or c != out:
                down = nn.Sequential(nn.Conv2d(c, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            layers = [block(c, p, stride, down)] + [block(out, p) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            c = out
        self.channels, self.stride = c, 32
        self.stage_channels = tuple(p * block.expansion for p in planes)
        if classifier:
            self.fc = nn.Linear(c, 1000)
        self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # reads raw [0, 1] images
        if pretrained:
            self.load_pretrained(Path(pretrained))

    def load_pretrained(self, path: Path) -> None:
        """Weights of a torchvision/timm ResNet of the same layout (.pth/.bin/.safetensors state
        dict; its classifier `fc.*` is dropped unless this ResNet keeps one)."""
        if not path.is_file():
            tv = TORCHVISION_FILES.get(self.name)
            which = f"torchvision's {tv} or timm's '{self.name}' weights" if tv else f"a torchvision/timm '{self.name}' state dict"
            raise UserError(
                f"pretrained weights for backbone '{self.name}' not found at {path}: save {which} there "
                f"(.pth/.bin/.safetensors), or set the model's 'pretrained' to '' to start from scratch"
            )
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("fc.") or k in own}
        body = lambda keys: {k for k in keys if not k.startswith("fc.")}  # noqa: E731 (a kept classifier may come from the file or not)
        bad = sorted(body(own) ^ body(state))
        bad += sorted(k for k in own if k in state and own[k].shape != state[k].shape)
        if bad:
            raise UserError(f"{path}: not a '{self.name}' state dict (mismatched keys: {bad[:5]})")
        self.load_state_dict(state, strict=False)

    def forward(self, x: torch.Tensor, late: bool = False) -> torch.Tensor:
        if not late:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs (B, C_k, H / 2^(k+2), W / 2^(k+2)), k = 0..3."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out
