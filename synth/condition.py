"""The generator's mesh condition: a "2D hand mesh image" rendered from MANO parameters and a
camera with the project renderer, at the generation resolution.

Both hands are drawn; right and left use disjoint hue ranges (right: reds to yellow-greens,
left: cyans to violets) so the network can tell them apart, and Lambert shading with a
headlight gives the 3D cue. The ``parts`` style colours each vertex by its dominant skinning
joint (palm, then three segments per finger: one hue per finger, darker towards the tip); the
``hands`` style uses one colour per hand. The same function serves training, caching and live
generation.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from handrecon.errors import UserError
from handrecon.hand_model.constants import NUM_VERTS
from handrecon.render import render_mesh

__all__ = [
    "CONDITION_STYLES",
    "HAND_HUES",
    "condition_from_mano",
    "condition_from_samples",
    "render_condition",
    "rescale_intrinsics",
    "to_control_tensor",
    "vertex_colors",
]

#: Hue range (degrees) of each hand; disjoint, so every pixel's hand is readable from its hue.
HAND_HUES = {"right": (0.0, 100.0), "left": (180.0, 280.0)}

# MANO joint -> (finger group, segment): palm 0; index, middle, pinky, ring, thumb 1..5.
_GROUP = (0, 1, 1, 1, 2, 2, 2, 5, 5, 5, 4, 4, 4, 3, 3, 3)  # hue order: palm, thumb, index, middle, ring, pinky
_SEGMENT = (0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2)


def part_palette(side: str) -> torch.Tensor:
    """(16, 3) RGB per MANO joint for one hand: a hue per finger group within the hand's range,
    brightness falling from the knuckle to the tip."""
    lo, hi = HAND_HUES[side]
    colors = []
    for group, segment in zip(_GROUP, _SEGMENT):
        hue = (lo + (hi - lo) * group / 5) / 360.0
        colors.append(colorsys.hsv_to_rgb(hue, 0.85, 1.0 - 0.2 * segment))
    return torch.tensor(colors, dtype=torch.float32)


def _parts_colors(hand_model) -> torch.Tensor:
    out = []
    for side in ("right", "left"):
        joint = hand_model.layers[side].lbs_weights.argmax(-1).cpu()  # (778,) dominant joint
        out.append(part_palette(side)[joint])
    return torch.cat(out)


def _hands_colors(hand_model) -> torch.Tensor:
    out = []
    for side in ("right", "left"):
        hue = sum(HAND_HUES[side]) / 2 / 360.0
        out.append(torch.tensor(colorsys.hsv_to_rgb(hue, 0.85, 1.0)).float().expand(NUM_VERTS, 3))
    return torch.cat(out)


#: Condition styles: name -> (hand_model -> (1556, 3) vertex colours).
CONDITION_STYLES: dict[str, Callable[[object], torch.Tensor]] = {
    "parts": _parts_colors,
    "hands": _hands_colors,
}


def vertex_colors(hand_model, style: str = "parts") -> torch.Tensor:
    """(1556, 3) vertex colours of the two-hand mesh in `style` (a key of CONDITION_STYLES)."""
    if style not in CONDITION_STYLES:
        raise UserError(f"unknown condition style {style!r}; choose one of {sorted(CONDITION_STYLES)}")
    return CONDITION_STYLES[style](hand_model)


def rescale_intrinsics(
    focal: torch.Tensor, princpt: torch.Tensor, from_size: torch.Tensor, to_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intrinsics of an image resized from `from_size` (B, 2) or (2,) (H, W) to `to_size`.

    With pixel centres at integer coordinates, ``x' = (x + 0.5) * s - 0.5``.
    """
    from_hw = torch.as_tensor(from_size, dtype=focal.dtype, device=focal.device)
    scale = torch.tensor(to_size, dtype=focal.dtype, device=focal.device).flip(-1) / from_hw.flip(-1)  # (sx, sy)
    return focal * scale, (princpt + 0.5) * scale - 0.5


def render_condition(
    verts: torch.Tensor,
    faces: torch.Tensor,
    colors: torch.Tensor,
    focal: torch.Tensor,
    princpt: torch.Tensor,
    image_size: tuple[int, int],
    valid: torch.Tensor | None = None,
    ambient: float = 0.45,
    diffuse: float = 0.55,
    background: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Render two-hand meshes as condition images.

    Args:
        verts: (B, 1556, 3) metres, camera frame (right hand first).
        faces: (F, 3) two-hand faces, right hand's first (``HandModel.faces_two_hand``).
        colors: (1556, 3) or (B, 1556, 3) vertex colours (:func:`vertex_colors`).
        focal, princpt: (B, 2) or (2,) pixels, for `image_size`.
        image_size: (H, W) of the condition (the generation resolution).
        valid: (B, 2) bool per (right, left) hand; absent hands are not drawn.
        ambient, diffuse: Lambert weights with a headlight; they sum to one so a surface
            facing the camera shows exactly its colour.

    Returns:
        ``image`` (B, H, W, 3) float in [0, 1]; ``hand`` (B, H, W) int64: 0 right, 1 left,
        -1 background.
    """
    if verts.dim() != 3 or verts.shape[1:] != (2 * NUM_VERTS, 3):
        raise ValueError(f"verts must have shape (B, {2 * NUM_VERTS}, 3), got {tuple(verts.shape)}")
    if valid is not None:
        valid = torch.as_tensor(valid, dtype=torch.bool, device=verts.device).reshape(-1, 2)
        valid = valid.repeat_interleave(NUM_VERTS, dim=1)  # (B, 1556): faces of absent hands are skipped
    out = render_mesh(
        verts,
        faces,
        focal,
        princpt,
        image_size,
        vertex_colors=colors,
        background=background,
        ambient=ambient,
        diffuse=diffuse,
        valid=valid,
    )
    right_faces = faces.shape[0] // 2
    face_idx = out["face_idx"]
    hand = torch.where(face_idx < 0, -1, (face_idx >= right_faces).long())
    return {"image": out["image"], "hand": hand}


def condition_from_mano(
    hand_model,
    mano_pose: torch.Tensor,
    mano_shape: torch.Tensor,
    mano_transl: torch.Tensor,
    focal: torch.Tensor,
    princpt: torch.Tensor,
    image_size: tuple[int, int],
    mano_valid: torch.Tensor | None = None,
    style: str = "parts",
) -> dict[str, torch.Tensor]:
    """Condition images from camera-frame MANO parameters of both hands.

    Args:
        hand_model: :class:`handrecon.hand_model.HandModel`.
        mano_pose (B, 2, 48), mano_shape (B, 2, 10), mano_transl (B, 2, 3): (right, left), as in
            the sample layout.
        focal, princpt: (B, 2) pixels for `image_size` (H, W).
        mano_valid: (B, 2) bool; default both hands present.

    Returns: as :func:`render_condition`, plus ``verts`` (B, 1556, 3) and ``joints`` (B, 42, 3).
    """
    param = hand_model.layers["right"].shapedirs  # dtype and device of the model
    pose, shape, transl = (torch.as_tensor(t, dtype=param.dtype, device=param.device) for t in (mano_pose, mano_shape, mano_transl))
    hands = {
        side: {"betas": shape[:, i], "global_orient": pose[:, i, :3], "hand_pose": pose[:, i, 3:], "transl": transl[:, i]}
        for i, side in enumerate(("right", "left"))
    }
    with torch.no_grad():
        mesh = hand_model(hands["right"], hands["left"])
    colors = vertex_colors(hand_model, style).to(param.device)
    focal, princpt = (torch.as_tensor(t, dtype=param.dtype, device=param.device) for t in (focal, princpt))
    out = render_condition(mesh.vertices, hand_model.faces_two_hand, colors, focal, princpt, image_size, mano_valid)
    return out | {"verts": mesh.vertices, "joints": mesh.joints}


def condition_from_samples(
    hand_model,
    samples: Sequence[Mapping] | Mapping,
    image_size: tuple[int, int] | None = None,
    style: str = "parts",
) -> dict[str, torch.Tensor]:
    """Condition images for samples in the toolkit's sample layout (a list of sample dicts or a
    collated batch), rendered at `image_size` (default: each sample's own size, which must then
    be shared); intrinsics are rescaled to it."""
    if not isinstance(samples, Mapping):
        samples = {key: np.stack([np.asarray(s[key]) for s in samples]) for key in
                   ("mano_pose", "mano_shape", "mano_transl", "mano_valid", "focal", "princpt", "image_size")}
    sizes = torch.as_tensor(np.asarray(samples["image_size"])).reshape(-1, 2)
    if image_size is None:
        if not (sizes == sizes[0]).all():
            raise UserError("samples have different image sizes; pass image_size to render them together")
        image_size = tuple(int(v) for v in sizes[0])
    focal, princpt = (torch.as_tensor(np.asarray(samples[k]), dtype=torch.float32).reshape(-1, 2) for k in ("focal", "princpt"))
    focal, princpt = rescale_intrinsics(focal, princpt, sizes.float(), image_size)
    return condition_from_mano(
        hand_model,
        torch.as_tensor(np.asarray(samples["mano_pose"])),
        torch.as_tensor(np.asarray(samples["mano_shape"])),
        torch.as_tensor(np.asarray(samples["mano_transl"])),
        focal,
        princpt,
        image_size,
        torch.as_tensor(np.asarray(samples["mano_valid"])),
        style,
    )


def to_control_tensor(image: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) condition image -> (B, 3, H, W), the layout diffusers' ControlNets take."""
    return image.permute(0, 3, 1, 2).contiguous()
