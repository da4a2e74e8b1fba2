"""Lambertian shading, compositing over a background, and a one-call mesh renderer.

Conventions as in :mod:`handrecon.camera` (camera frame x right, y down, z forward;
pixel (row r, col c) centred at (x=c, y=r)). Colours are linear floats, nominally in [0, 1].
"""

from __future__ import annotations

import torch

from ..camera import check_intrinsics
from .raster import Fragments, check_mesh, interpolate_packed, rasterize, vertex_normals

__all__ = ["DEFAULT_ALBEDO", "composite", "face_camera", "render_mesh", "shade_lambert"]

#: Default albedo (RGB in [0, 1]) for meshes rendered without vertex colours: a light skin tone.
DEFAULT_ALBEDO = (0.85, 0.68, 0.58)


def _per_batch_vector(v, B: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """(3,), (1, 3) or (B, 3) -> (B, 3) on the device/dtype of `like`."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    if v.dim() == 1:
        v = v[None]
    if v.dim() != 2 or v.shape[1] != 3 or v.shape[0] not in (1, B):
        raise ValueError(f"{name} must have shape ({B}, 3) or (3,), got {tuple(v.shape)}")
    return v.expand(B, 3)


def _per_batch_scalar(x, B: int, like: torch.Tensor, name: str) -> float | torch.Tensor:
    """A float, or a tensor with one value or one value per image ((B,), (B, 1, 1, 1)...) -> float,
    0-d tensor or (B,) tensor on the device/dtype of `like`."""
    if isinstance(x, (int, float)):
        return float(x)
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.numel() == 1:
        return t.reshape(())
    if t.dim() == 0 or t.shape[0] != B or t.numel() != B:
        raise ValueError(
            f"{name} must be a float or hold one value per image (B={B}), got shape {tuple(t.shape)}"
        )
    return t.reshape(B)


def shade_lambert(
    normals: torch.Tensor,
    albedo: torch.Tensor,
    light_dir: torch.Tensor | tuple[float, float, float] = (0.0, 0.0, -1.0),
    ambient: float | torch.Tensor = 0.3,
    diffuse: float | torch.Tensor = 0.7,
    two_sided: bool = False,
) -> torch.Tensor:
    """Lambertian shading ``albedo * (ambient + diffuse * max(n . l, 0))``.

    Args:
        normals: (B, H, W, 3) unit surface normals, camera frame. For meshes whose winding may
            be inconsistent, orient them towards the camera first (:func:`face_camera`, as
            :func:`render_mesh` does) so the visible side is the lit side.
        albedo: (B, H, W, 3) or (B, 1, 1, 3) (or anything broadcastable) RGB in [0, 1].
        light_dir: (B, 3) or (3,) direction from the surface *towards* the light (a directional
            light), camera frame; normalized here. The default (0, 0, -1) is a headlight: light
            coming from the camera.
        ambient, diffuse: weights of the ambient and diffuse terms (default sum 1, so a surface
            facing the light shows exactly its albedo); floats, or one value per image as (B,)
            or (B, 1, 1, 1) tensors.
        two_sided: use ``|n . l|`` instead of ``max(n . l, 0)``, lighting both sides equally.

    Returns:
        (B, H, W, 3) RGB, not clamped. Zero normals (background) give ``ambient * albedo``.
    """
    if normals.dim() != 4 or normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape (B, H, W, 3), got {tuple(normals.shape)}")
    B = normals.shape[0]
    light = torch.nn.functional.normalize(_per_batch_vector(light_dir, B, normals, "light_dir"), dim=-1)
    try:
        torch.broadcast_shapes(albedo.shape, normals.shape)
    except RuntimeError:
        raise ValueError(
            f"albedo must broadcast to normals' shape {tuple(normals.shape)}, got {tuple(albedo.shape)}"
        ) from None
    ambient, diffuse = (
        t.view(B, 1, 1, 1) if isinstance(t, torch.Tensor) and t.dim() == 1 else t
        for t in (
            _per_batch_scalar(ambient, B, normals, "ambient"),
            _per_batch_scalar(diffuse, B, normals, "diffuse"),
        )
    )
    return _lambert(normals, albedo, light[:, None, None, :], ambient, diffuse, two_sided)


def _lambert(normals, albedo, light, ambient, diffuse, two_sided: bool) -> torch.Tensor:
    """Lambert on broadcastable (..., 3) unit normals, albedo and unit light directions, and
    ambient / diffuse weights broadcastable to (..., 1)."""
    cos = (normals * light).sum(-1, keepdim=True)
    cos = cos.abs() if two_sided else cos.clamp(min=0)
    return albedo * (ambient + diffuse * cos)


def face_camera(normals: torch.Tensor, points_cam: torch.Tensor) -> torch.Tensor:
    """Flip normals that point away from the camera.

    Args:
        normals: (..., 3) normals, camera frame.
        points_cam: (..., 3) the surface points in metres, camera frame, or any vectors along
            the viewing rays through them (only the direction matters). The camera sits at
            the origin, so a normal faces it when ``n . p <= 0``.

    Returns:
        (..., 3) normals with ``n . p <= 0``; shading with them is independent of the winding.
    """
    facing = (normals * points_cam).sum(-1, keepdim=True) <= 0
    return torch.where(facing, normals, -normals)


def _background(background, B: int, H: int, W: int, C: int, like: torch.Tensor) -> torch.Tensor:
    """Background spec (None, scalar, (C,), (B, C), (B, H, W, C)) -> tensor broadcastable to (B, H, W, C)."""
    bg = torch.as_tensor(0.0 if background is None else background, dtype=like.dtype, device=like.device)
    if bg.dim() == 0:
        return bg
    if bg.dim() == 1 and bg.shape[0] == C:
        return bg.view(1, 1, 1, C)
    if bg.dim() == 2 and bg.shape[1] == C and bg.shape[0] in (1, B):
        return bg[:, None, None, :]
    if bg.dim() == 4 and bg.shape[0] in (1, B) and bg.shape[1:] == (H, W, C):
        return bg
    raise ValueError(
        f"background must be a scalar, ({C},), ({B}, {C}) or ({B}, {H}, {W}, {C}), got {tuple(bg.shape)}"
    )


def composite(
    rgb: torch.Tensor, mask: torch.Tensor, background: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Put `rgb` where `mask` is True and `background` elsewhere.

    Args:
        rgb: (B, H, W, C) foreground colours.
        mask: (B, H, W) bool coverage.
        background: (B, H, W, C) image, (B, C) or (C,) colour per image, a scalar, or None
            (black). Copied exactly where `mask` is False.

    Returns:
        (B, H, W, C); differentiable w.r.t. `rgb` (and `background`).
    """
    if rgb.dim() != 4:
        raise ValueError(f"rgb must have shape (B, H, W, C), got {tuple(rgb.shape)}")
    B, H, W, C = rgb.shape
    if mask.shape != (B, H, W):
        raise ValueError(f"mask must have shape {(B, H, W)} to match rgb, got {tuple(mask.shape)}")
    bg = _background(background, B, H, W, C, rgb)
    return torch.where(mask[..., None], rgb, bg)


def render_mesh(
    verts_cam: torch.Tensor,
    faces: torch.Tensor,
    focal: torch.Tensor,
    princpt: torch.Tensor,
    image_size: tuple[int, int],
    vertex_colors: torch.Tensor | None = None,
    background: torch.Tensor | float | None = None,
    light_dir: torch.Tensor | tuple[float, float, float] | None = None,
    ambient: float | torch.Tensor = 0.3,
    diffuse: float | torch.Tensor = 0.7,
    znear: float = 1e-3,
    cull_backfaces: bool = False,
    chunk: int | None = None,
    valid: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | Fragments]:
    """Rasterize, shade (Lambert, smooth normals) and composite a batch of meshes.

    Args:
        verts_cam: (B, V, 3) metres, camera frame (x right, y down, z forward).
        faces: (F, 3) int64 shared by the batch.
        focal, princpt: (B, 2) or (2,) pixels; pixel (row r, col c) is centred at (x=c, y=r).
        image_size: (H, W).
        vertex_colors: (B, V, 3) or (V, 3) albedo in [0, 1]; default :data:`DEFAULT_ALBEDO`.
        background: as in :func:`composite`; default black.
        light_dir: (B, 3) or (3,) direction towards the light; default headlight (0, 0, -1).
        ambient, diffuse: Lambert weights, floats or one per image (see :func:`shade_lambert`).
        znear, cull_backfaces, chunk: passed to :func:`rasterize`.
        valid: (B, V) or (V,) bool per vertex, passed to :func:`rasterize`: faces touching a
            vertex marked False are not drawn, e.g. ``valid[:, :778] = False`` leaves the right
            hand of a two-hand mesh out of the picture.

    Returns:
        dict with ``image`` (B, H, W, 3) float, the shaded mesh clamped to [0, 1] where ``mask``
        and the background (copied as given) elsewhere; ``mask`` (B, H, W) bool; ``depth``
        (B, H, W) metres, 0 on background; ``face_idx`` (B, H, W) int64, -1 on background;
        ``normals`` (B, H, W, 3) unit camera-frame normals turned towards the camera, 0 on
        background; ``fragments`` the raw :class:`Fragments`. Image, depth and normals are
        differentiable w.r.t. vertices and colours (not through visibility).
    """
    faces = check_mesh(verts_cam, faces, "verts_cam")
    if verts_cam.dtype in (torch.float16, torch.bfloat16):
        verts_cam = verts_cam.float()  # the rasterizer works in float32 at least; so does shading
    B, V, _ = verts_cam.shape
    frags = rasterize(
        verts_cam, faces, focal, princpt, image_size, znear=znear, cull_backfaces=cull_backfaces, chunk=chunk,
        valid=valid,
    )
    H, W = frags.mask.shape[1:]
    attrs = [vertex_normals(verts_cam, faces)]
    if vertex_colors is not None:
        colors = torch.as_tensor(vertex_colors, dtype=verts_cam.dtype, device=verts_cam.device)
        if colors.dim() == 2:
            colors = colors[None]
        if colors.dim() != 3 or colors.shape[1:] != (V, 3) or colors.shape[0] not in (1, B):
            raise ValueError(
                f"vertex_colors must have shape ({B}, {V}, 3) or ({V}, 3), got {tuple(colors.shape)}"
            )
        attrs.append(colors.expand(B, V, 3))
    light = _per_batch_vector((0.0, 0.0, -1.0) if light_dir is None else light_dir, B, verts_cam, "light_dir")
    light = torch.nn.functional.normalize(light, dim=-1)
    # One interpolation pass, and shading on the covered pixels only (often a small part of
    # the image), written into full images at the end.
    pix, val = interpolate_packed(frags, faces, torch.cat(attrs, dim=-1) if len(attrs) > 1 else attrs[0])
    normals_p = torch.nn.functional.normalize(val[:, 0:3], dim=-1, eps=1e-12)
    albedo = val[:, 3:6] if vertex_colors is not None else verts_cam.new_tensor(DEFAULT_ALBEDO)
    # Turn normals towards the camera using the pixel's viewing ray (the surface point lies on
    # it), so the visible side is lit whatever the winding.
    b = pix // (H * W)
    dt = verts_cam.dtype
    f_b, c_b = (t.detach().to(dt).index_select(0, b) for t in check_intrinsics(focal, princpt, B))
    px, py = (pix % W).to(dt), ((pix // W) % H).to(dt)
    ray = torch.stack(
        [(px - c_b[:, 0]) / f_b[:, 0], (py - c_b[:, 1]) / f_b[:, 1], torch.ones_like(px)], dim=1
    )
    normals_p = face_camera(normals_p, ray)
    ambient, diffuse = (
        t.index_select(0, b)[:, None] if isinstance(t, torch.Tensor) and t.dim() == 1 else t
        for t in (
            _per_batch_scalar(ambient, B, verts_cam, "ambient"),
            _per_batch_scalar(diffuse, B, verts_cam, "diffuse"),
        )
    )
    rgb = _lambert(normals_p, albedo, light.index_select(0, b), ambient, diffuse, False).clamp(0, 1)
    image = verts_cam.new_empty(B, H, W, 3)
    image.copy_(_background(background, B, H, W, 3, verts_cam).expand(B, H, W, 3))
    image.view(-1, 3)[pix] = rgb
    normals = verts_cam.new_zeros(B * H * W, 3)
    normals[pix] = normals_p
    normals = normals.view(B, H, W, 3)
    return {
        "image": image,
        "mask": frags.mask,
        "depth": frags.depth,
        "face_idx": frags.face_idx,
        "normals": normals,
        "fragments": frags,
    }
