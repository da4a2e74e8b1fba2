"""Rotation conversions on batched tensors (radians; matrices act on column vectors).

6D representation (Zhou et al. 2019): the first two columns of the rotation matrix,
concatenated as [R[:, 0], R[:, 1]].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from smplx.lbs import batch_rodrigues


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
    return batch_rodrigues(aa.reshape(-1, 3)).reshape(*aa.shape[:-1], 3, 3)


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two given columns."""
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(mat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns."""
    return torch.cat([mat[..., :, 0], mat[..., :, 1]], dim=-1)


def matrix_to_axis_angle(mat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3), angle in [0, pi], through a unit quaternion (stable near 0 and pi)."""
    m = mat.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    # four candidate quaternions (w, x, y, z); take the best-conditioned one per matrix
    q_abs = torch.sqrt(
        torch.clamp(
            torch.stack(
                [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
            ),
            min=1e-12,
        )
    )
    cands = torch.stack(
        [
            torch.stack([q_abs[:, 0] ** 2, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
            torch.stack([m[:, 2, 1] - m[:, 1, 2], q_abs[:, 1] ** 2, m[:, 1, 0] + m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0]], -1),
            torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] + m[:, 0, 1], q_abs[:, 2] ** 2, m[:, 2, 1] + m[:, 1, 2]], -1),
            torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 2, 0] + m[:, 0, 2], m[:, 2, 1] + m[:, 1, 2], q_abs[:, 3] ** 2], -1),
        ],
        dim=1,
    ) / (2 * q_abs[..., None])
    best = q_abs.argmax(-1)
    q = cands[torch.arange(len(m)), best]
    q = q * torch.where(q[:, :1] < 0, -1.0, 1.0)  # w >= 0 -> angle in [0, pi]
    q = F.normalize(q, dim=-1)
    sin_half = q[:, 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[:, :1])
    # angle / sin(angle / 2) -> 2 as the angle -> 0
    scale = torch.where(sin_half > 1e-6, angle / sin_half.clamp(min=1e-12), 2.0 + angle**2 / 12)
    return (q[:, 1:] * scale).reshape(*mat.shape[:-2], 3)


def rot6d_to_axis_angle(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3)."""
    return matrix_to_axis_angle(rot6d_to_matrix(x))
