"""Pinhole camera: the toolkit's one perspective projection and its inverse.

Conventions (those of InterHand2.6M and OpenCV), shared by the whole toolkit:

* Camera frame: x right, y down, z forward, in metres; points in front of the camera have Z > 0.
* Image coordinates in pixels: the centre of pixel (row r, col c) is at (x=c, y=r), so pixel
  (r, c) covers [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5] and the image spans
  [-0.5, W - 0.5] x [-0.5, H - 0.5].
* Intrinsics: focal (fx, fy) and principal point (cx, cy), both in pixels;
  ``x = fx * X / Z + cx``, ``y = fy * Y / Z + cy``.

Points at or behind the camera. A point with ``Z <= MIN_DEPTH`` (0.1 mm, or behind the
camera, or NaN depth) has no image position. :func:`project` handles it by one of two policies:

* ``behind="zero"`` (the default, used by the dataset readers, the shard reader and the
  renderer): its pixel is exactly (0, 0) and carries no gradient. The value is finite, so
  label arrays stay finite; readers pair it with a False ``joints_valid``-style mask where it
  matters, and the rasterizer never reads it (it skips every face with a vertex closer than
  ``znear``, which is always above ``MIN_DEPTH``).
* ``behind="clamp"`` (the regressors): the depth is clamped to ``MIN_DEPTH`` before dividing.
  A prediction that strays behind the camera (early in training) gets large but finite pixel
  values and finite gradients w.r.t. X and Y instead of inf / NaN; this is a training-stability
  choice, not a geometric answer.

Both policies give identical values for points in front of the camera. numpy arrays and torch
tensors are both accepted (the result is of the same kind); with torch the result follows the
usual type promotion of the inputs and is differentiable w.r.t. all of them.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BEHIND", "MIN_DEPTH", "check_intrinsics", "intrinsics_matrix", "project", "unproject"]

#: Depth (metres) at or below which a point counts as at or behind the camera (see the module doc).
MIN_DEPTH = 1e-4
#: The policies of :func:`project` for points with ``Z <= MIN_DEPTH``.
BEHIND = ("zero", "clamp")


def check_intrinsics(
    focal: torch.Tensor, princpt: torch.Tensor, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate torch `focal` and `princpt` and broadcast them to (batch, 2).

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


def _per_point(t, name: str, points):
    """Intrinsics as the same kind of array as `points` (torch on its device, or numpy); (2,) as
    given, (..., 2) with one row per batch element -> (..., 1, 2) so they broadcast over the
    point axis."""
    t = torch.as_tensor(t, device=points.device) if isinstance(points, torch.Tensor) else np.asarray(t)
    if t.ndim == 0 or t.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (2,) or (..., 2), got {tuple(t.shape)}")
    return t[..., None, :] if t.ndim >= 2 else t


def project(points, focal, princpt, behind: str = "zero"):
    """Project camera-frame points to pixel coordinates.

    Args:
        points: (..., N, 3) metres, camera frame (x right, y down, z forward); numpy or torch.
        focal: (fx, fy) pixels: (2,) shared by all points, or (..., 2) with one row per batch
            element, e.g. (B, 2) for points (B, N, 3).
        princpt: (cx, cy) pixels, shaped like `focal`.
        behind: what points with ``Z <= MIN_DEPTH`` give: "zero" (pixel (0, 0), no gradient) or
            "clamp" (depth clamped to ``MIN_DEPTH``); see the module docstring.

    Returns:
        (..., N, 2) pixel coordinates (x, y) with ``x = fx*X/Z + cx``, ``y = fy*Y/Z + cy``; the
        centre of pixel (row r, col c) is at (x=c, y=r).
    """
    if behind not in BEHIND:
        raise ValueError(f"behind must be one of {', '.join(BEHIND)}, got {behind!r}")
    if points.ndim < 2 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., N, 3), got {tuple(points.shape)}")
    focal, princpt = _per_point(focal, "focal", points), _per_point(princpt, "princpt", points)
    where = torch.where if isinstance(points, torch.Tensor) else np.where
    z = points[..., 2:3]
    if behind == "clamp":
        z = z.clamp(min=MIN_DEPTH) if isinstance(z, torch.Tensor) else np.maximum(z, MIN_DEPTH)
        return points[..., :2] / z * focal + princpt
    front = z > MIN_DEPTH
    uv = points[..., :2] / where(front, z, 1.0) * focal + princpt
    return where(front, uv, 0.0)


def unproject(pixels, depth, focal, princpt):
    """Inverse of :func:`project`: pixel coordinates plus camera-space Z to 3D points.

    Args:
        pixels: (..., N, 2) pixel coordinates (x, y), same convention as :func:`project`;
            numpy or torch.
        depth: (..., N) camera-space Z in metres.
        focal, princpt: (2,) or (..., 2) pixels, as in :func:`project`.

    Returns:
        (..., N, 3) metres, camera frame; exact inverse of :func:`project` for Z > ``MIN_DEPTH``.
    """
    if pixels.ndim < 2 or pixels.shape[-1] != 2:
        raise ValueError(f"pixels must have shape (..., N, 2), got {tuple(pixels.shape)}")
    if tuple(depth.shape) != tuple(pixels.shape[:-1]):
        raise ValueError(
            f"depth must have shape {tuple(pixels.shape[:-1])} to match pixels, got {tuple(depth.shape)}"
        )
    focal, princpt = _per_point(focal, "focal", pixels), _per_point(princpt, "princpt", pixels)
    xy = (pixels - princpt) / focal * depth[..., None]
    if isinstance(xy, torch.Tensor):
        return torch.cat([xy, depth[..., None]], dim=-1)
    return np.concatenate([xy, depth[..., None]], axis=-1)


def intrinsics_matrix(focal: torch.Tensor, princpt: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` from torch (B, 2) or (2,)
    focal and princpt in pixels (same pixel convention as :func:`project`)."""
    batch = max(focal.shape[0] if focal.dim() == 2 else 1, princpt.shape[0] if princpt.dim() == 2 else 1)
    focal, princpt = check_intrinsics(focal, princpt, batch)
    K = torch.zeros(focal.shape[0], 3, 3, dtype=focal.dtype, device=focal.device)
    K[:, 0, 0] = focal[:, 0]
    K[:, 1, 1] = focal[:, 1]
    K[:, 0, 2] = princpt[:, 0]
    K[:, 1, 2] = princpt[:, 1]
    K[:, 2, 2] = 1
    return K
