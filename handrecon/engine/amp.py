"""Mixed precision shared by the regressor trainer, prediction and the generator trainer."""
from __future__ import annotations

import torch


def autocast(device: torch.device, amp: str):
    """Autocast context for 'off' | 'bf16' | 'fp16'."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
