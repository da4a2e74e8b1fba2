"""Pinhole camera: perspective projection with per-sample intrinsics.

Conventions (those of InterHand2.6M and OpenCV), shared by the whole render package:

* Camera frame: x right, y down, z forward, in metres; points in front of the camera have Z > 0.
* Image coordinates in pixels: the centre of pixel (row r, col c) is at (x=c, y=r), so pixel
  (r, c) covers [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5] and the image spans
  [-0.5, W - 0.5] x [-0.5, H - 0.5].
* Intrinsics per batch element: focal (fx, fy) and principal point (cx, cy), both in pixels;
  ``x = fx * X / Z + cx``, ``y = fy * Y / Z + cy``.
"""

from __future__ import annotations

import torch

__all__ = ["check_intrinsics", "intrinsics_matrix", "project_points", "unproject_pixels"]


def check_intrinsics(
    focal: torch.Tensor, princpt: torch.Tensor, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate `focal` and `princpt` and broadcast them to (batch, 2).

    Each may be (B, 2) with B == `batch`, or (2,) / (1, 2) shared by the whole batch.
    Raises ValueError naming the argument and its shape otherwise.
    """
    out = []
    for name, t in (("focal", focal), ("princpt", princpt)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape ({batch}, 2), got {type(t).__name__}")
        shape = tuple(t.shape)
        if t.dim() == 1:
            t = t[None]
        if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] not in (1, batch):
            raise ValueError(f"{name} must have shape ({batch}, 2) or (2,), got {shape}")
        out.append(t.expand(batch, 2))
    return out[0], out[1]


def project_points(points_cam: torch.Tensor, focal: torch.Tensor, princpt: torch.Tensor) -> torch.Tensor:
    """Project camera-frame points to pixel coordinates.

    Args:
        points_cam: (B, N, 3) metres, camera frame (x right, y down, z forward).
        focal: (B, 2) (fx, fy) in pixels; (2,) is broadcast over the batch.
        princpt: (B, 2) (cx, cy) in pixels; (2,) is broadcast over the batch.

    Returns:
        (B, N, 2) pixel coordinates (x, y) with ``x = fx*X/Z + cx``, ``y = fy*Y/Z + cy``; the
        centre of pixel (row r, col c) is at (x=c, y=r). Points with Z <= 0 give meaningless
        (possibly infinite) values; callers that care must mask them (the rasterizer does).
        Differentiable w.r.t. all inputs.
    """
    if points_cam.dim() != 3 or points_cam.shape[-1] != 3:
        raise ValueError(f"points_cam must have shape (B, N, 3), got {tuple(points_cam.shape)}")
    focal, princpt = check_intrinsics(focal, princpt, points_cam.shape[0])
    xy = points_cam[..., :2] / points_cam[..., 2:3]
    return xy * focal[:, None, :].to(xy.dtype) + princpt[:, None, :].to(xy.dtype)


def unproject_pixels(
    pixels: torch.Tensor, depth: torch.Tensor, focal: torch.Tensor, princpt: torch.Tensor
) -> torch.Tensor:
    """Inverse of :func:`project_points`: pixel coordinates plus camera-space Z to 3D points.

    Args:
        pixels: (B, N, 2) pixel coordinates (x, y), same convention as :func:`project_points`.
        depth: (B, N) camera-space Z in metres.
        focal, princpt: (B, 2) or (2,) pixels.

    Returns:
        (B, N, 3) metres, camera frame.
    """
    if pixels.dim() != 3 or pixels.shape[-1] != 2:
        raise ValueError(f"pixels must have shape (B, N, 2), got {tuple(pixels.shape)}")
    if depth.shape != pixels.shape[:2]:
        raise ValueError(
            f"depth must have shape {tuple(pixels.shape[:2])} to match pixels, got {tuple(depth.shape)}"
        )
    focal, princpt = check_intrinsics(focal, princpt, pixels.shape[0])
    xy = (pixels - princpt[:, None, :]) / focal[:, None, :] * depth[..., None]
    return torch.cat([xy, depth[..., None]], dim=-1)


def intrinsics_matrix(focal: torch.Tensor, princpt: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` from (B, 2) or (2,) focal and
    princpt in pixels (same pixel convention as :func:`project_points`)."""
    batch = max(focal.shape[0] if focal.dim() == 2 else 1, princpt.shape[0] if princpt.dim() == 2 else 1)
    focal, princpt = check_intrinsics(focal, princpt, batch)
    K = torch.zeros(focal.shape[0], 3, 3, dtype=focal.dtype, device=focal.device)
    K[:, 0, 0] = focal[:, 0]
    K[:, 1, 1] = focal[:, 1]
    K[:, 0, 2] = princpt[:, 0]
    K[:, 1, 2] = princpt[:, 1]
    K[:, 2, 2] = 1
    return K
