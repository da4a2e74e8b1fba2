"""Pure tensor building blocks shared by the regressors: soft-argmax, feature sampling at pixel
coordinates, RoI crops with their exact pixel maps, and the virtual crop camera.

Projections use `handrecon.camera` with ``behind="clamp"``: a predicted point that strays behind
the camera still gives finite pixels and gradients (a training-stability choice).

Pixel convention as everywhere in the toolkit: pixel (row r, col c) has its centre at (x=c, y=r).
A heatmap of width Wh over a crop of width S has cell i centred at crop pixel (i + 0.5) S / Wh - 0.5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(B, H, W, 3) uint8 (a collated sample batch) or (B, 3, H, W) float in [0, 1] -> normalised (B, 3, H, W) float."""
    if image.dtype == torch.uint8:
        image = image.permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image - m) / s


def soft_argmax_2d(heatmap: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits -> (B, K, 2) expected (x, y) in heatmap cells."""
    b, k, h, w = heatmap.shape
    prob = heatmap.reshape(b, k, h * w).float().softmax(-1).reshape(b, k, h, w)
    xs = torch.arange(w, device=heatmap.device, dtype=prob.dtype)
    ys = torch.arange(h, device=heatmap.device, dtype=prob.dtype)
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], -1)


def soft_argmax_3d(heatmap: torch.Tensor) -> torch.Tensor:
    """(B, K, D, H, W) logits -> (B, K, 3) expected (x, y, z) in heatmap cells."""
    b, k, d, h, w = heatmap.shape
    prob = heatmap.reshape(b, k, d * h * w).float().softmax(-1).reshape(b, k, d, h, w)
    grids = [torch.arange(n, device=heatmap.device, dtype=prob.dtype) for n in (w, h, d)]
    x = (prob.sum((2, 3)) * grids[0]).sum(-1)
    y = (prob.sum((2, 4)) * grids[1]).sum(-1)
    z = (prob.sum((3, 4)) * grids[2]).sum(-1)
    return torch.stack([x, y, z], -1)


def sample_at(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features (B, C, H, W) at (B, K, 2) points given in feature cells (x, y) -> (B, K, C).
    Points outside the map read zeros."""
    h, w = features.shape[-2:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=points.device, dtype=points.dtype)
    grid = (points * scale - 1.0)[:, :, None, :]
    if w == 1 or h == 1:  # a single cell: every point reads it
        grid = torch.where(torch.tensor([w == 1, h == 1], device=points.device), torch.zeros_like(grid), grid)
    out = F.grid_sample(features, grid.to(features.dtype), align_corners=True)
    return out[..., 0].transpose(1, 2)


def square_boxes(boxes: torch.Tensor, scale: float = 1.0, min_size: float = 8.0) -> torch.Tensor:
    """(..., 4) x0, y0, x1, y1 -> the square of side max(w, h) * scale (at least `min_size`) about the same centre."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    side = torch.clamp((boxes[..., 2:] - boxes[..., :2]).amax(-1, keepdim=True) * scale, min=min_size)
    return torch.cat([centre - side / 2, centre + side / 2], -1)


def crop_images(
    images: torch.Tensor, boxes: torch.Tensor, size: int, image_index: torch.Tensor, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, C, H, W) images, (N, 4) boxes in pixels of images (N,) `image_index` -> (N, C, size, size)
    crops by RoI-align.

    Crop pixel j (0..size-1) samples image coordinate x0 + (j + 0.5) w / size (see `crop_to_image`).
    `flip` (N,) bool mirrors the chosen crops left-right: the crop of the mirrored image and box.
    """
    if image_index.numel() and not 0 <= int(image_index.min()) <= int(image_index.max()) < len(images):
        raise IndexError(f"image_index must be in [0, {len(images)}), got {image_index.tolist()}")
    rois = torch.cat([image_index.to(boxes.dtype)[:, None], boxes + 0.5], 1)
    crops = roi_align(images, rois.to(images.dtype), (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    if flip is not None:
        crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
    return crops


def identity_rot6d(n: int) -> torch.Tensor:
    """(n * 6,) the 6D code of n identity rotations, used as output biases so training starts at rest."""
    return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(n)
