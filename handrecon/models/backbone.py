"""Image backbones from timm by name, with pretrained weights only from a local file."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from ..errors import UserError


class Backbone(nn.Module):
    """A timm model's last feature map: (B, C_in, H, W) -> (B, channels, H / stride, W / stride)."""

    def __init__(self, name: str, pretrained: str | Path = "", in_chans: int = 3):
        super().__init__()
        if name not in timm.list_models():
            raise UserError(f"unknown timm backbone '{name}' (see timm.list_models(); e.g. resnet50, resnet18, test_resnet)")
        kwargs: dict = dict(features_only=True, out_indices=(-1,), in_chans=in_chans)
        if pretrained:
            path = Path(pretrained)
            if not path.is_file():
                raise UserError(
                    f"pretrained weights for backbone '{name}' not found at {path}: save timm's '{name}' "
                    f"weights (.pth/.bin/.safetensors state dict) there, or set the model's 'pretrained' to '' to start from scratch"
                )
            # timm reads the file itself (no hub access when a file is given)
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        self.net = timm.create_model(name, **kwargs)
        self.channels = self.net.feature_info.channels()[-1]
        self.stride = self.net.feature_info.reduction()[-1]
        cfg = getattr(self.net, "pretrained_cfg", {}) or {}
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]
