"""Random posed two-hand meshes for the metric tests."""
from __future__ import annotations

import numpy as np
import torch


def random_hand_meshes(hand_model, n: int, seed: int) -> np.ndarray:
    """(n, 1556, 3) float64 metres: per hand (right, then left) random betas, orientation and pose
    (0.3 x N(0, 1) about the mean hand), about 0.6 m in front of the camera; seeded."""
    gen = torch.Generator().manual_seed(seed)
    meshes = []
    for side in ("right", "left"):
        out = hand_model.hand(
            side,
            betas=torch.randn(n, 10, generator=gen),
            global_orient=torch.randn(n, 3, generator=gen),
            hand_pose=0.3 * torch.randn(n, 45, generator=gen),
            transl=0.1 * torch.randn(n, 3, generator=gen) + torch.tensor([0.0, 0.0, 0.6]),
        )
        meshes.append(out.vertices.double().numpy())
    return np.concatenate(meshes, 1)
