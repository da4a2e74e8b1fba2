"""handrecon.camera (projection, its inverse, the policy for points at or behind the camera) and
the renderer's per-vertex `valid` mask that leaves a hand out of a picture."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handrecon.camera import MIN_DEPTH, project, unproject
from handrecon.render import rasterize, render_mesh

FOCAL = np.array([500.0, 480.0])
PRINCPT = np.array([63.5, 47.5])


def _points(n: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-0.3, 0.3, (n, 2)), rng.uniform(0.2, 2.0, (n, 1))], axis=1)


@pytest.mark.parametrize("behind", ["zero", "clamp"])
def test_round_trip_numpy_and_torch(behind):
    pts = _points()
    uv = project(pts, FOCAL, PRINCPT, behind=behind)
    assert isinstance(uv, np.ndarray) and uv.shape == (50, 2)
    np.testing.assert_allclose(unproject(uv, pts[:, 2], FOCAL, PRINCPT), pts, rtol=0, atol=1e-12)
    # Batched torch with one camera per batch element.
    t = torch.as_tensor(np.stack([pts, _points(seed=1)]))
    focal = torch.tensor([[500.0, 480.0], [300.0, 310.0]], dtype=torch.float64)
    princpt = torch.tensor([[63.5, 47.5], [31.5, 40.0]], dtype=torch.float64)
    uv_t = project(t, focal, princpt, behind=behind)
    assert isinstance(uv_t, torch.Tensor) and uv_t.shape == (2, 50, 2)
    torch.testing.assert_close(unproject(uv_t, t[..., 2], focal, princpt), t, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(uv_t[0].numpy(), uv)  # same numbers from numpy and torch
    expected = t[1, :, :2] / t[1, :, 2:] * focal[1] + princpt[1]
    torch.testing.assert_close(uv_t[1], expected, rtol=0, atol=0)


def test_points_on_the_optical_axis_land_on_the_principal_point():
    uv = project(np.array([[0.0, 0.0, 2.0], [0.1, -0.2, 0.5]]), FOCAL, PRINCPT)
    np.testing.assert_allclose(uv, [[63.5, 47.5], [500 * 0.2 + 63.5, 480 * -0.4 + 47.5]])


# Crafted depths: on the camera plane, behind it, exactly at MIN_DEPTH, just in front of it.
CRAFTED = np.array(
    [[0.1, 0.2, 0.0], [0.1, -0.2, -0.5], [-0.3, 0.1, -1e-6], [0.02, 0.01, MIN_DEPTH], [0.02, 0.01, 2 * MIN_DEPTH]]
)


def test_zero_policy_gives_pixel_zero_at_or_behind_the_camera():
    for pts in (CRAFTED, torch.as_tensor(CRAFTED)):
        uv = np.asarray(project(pts, FOCAL, PRINCPT))
        np.testing.assert_array_equal(uv[:4], 0.0)
        np.testing.assert_allclose(uv[4], CRAFTED[4, :2] / (2 * MIN_DEPTH) * FOCAL + PRINCPT)
    uv = project(np.array([[0.1, 0.1, np.nan]]), FOCAL, PRINCPT)  # no depth: no position either
    np.testing.assert_array_equal(uv, 0.0)


def test_zero_policy_has_finite_gradients_and_none_behind():
    pts = torch.as_tensor(CRAFTED)[None].clone().requires_grad_(True)
    project(pts, torch.as_tensor(FOCAL), torch.as_tensor(PRINCPT)).sum().backward()
    assert torch.isfinite(pts.grad).all()
    assert (pts.grad[0, :4] == 0).all() and (pts.grad[0, 4] != 0).any()


def test_clamp_policy_divides_by_min_depth_and_keeps_gradients():
    for pts in (CRAFTED, torch.as_tensor(CRAFTED)):
        uv = np.asarray(project(pts, FOCAL, PRINCPT, behind="clamp"))
        np.testing.assert_allclose(uv[:4], CRAFTED[:4, :2] / MIN_DEPTH * FOCAL + PRINCPT)
        np.testing.assert_allclose(uv[4], CRAFTED[4, :2] / (2 * MIN_DEPTH) * FOCAL + PRINCPT)
    pts = torch.as_tensor(CRAFTED)[None].clone().requires_grad_(True)
    project(pts, torch.as_tensor(FOCAL)[None], torch.as_tensor(PRINCPT)[None], behind="clamp").sum().backward()
    assert torch.isfinite(pts.grad).all()
    assert (pts.grad[0, :, :2] != 0).all()  # x and y still pull on every point


def test_policies_agree_in_front_of_the_camera_and_unknown_policy_is_refused():
    pts = _points()
    np.testing.assert_array_equal(project(pts, FOCAL, PRINCPT), project(pts, FOCAL, PRINCPT, behind="clamp"))
    with pytest.raises(ValueError, match="behind"):
        project(pts, FOCAL, PRINCPT, behind="inf")
    with pytest.raises(ValueError, match="points"):
        project(pts[:, :2], FOCAL, PRINCPT)
    with pytest.raises(ValueError, match="depth"):
        unproject(pts[:, :2], pts[:3, 2], FOCAL, PRINCPT)


def test_rasterizer_skips_faces_at_the_camera_plane_whatever_znear():
    # one triangle in front of the camera, one with a vertex on the camera plane
    verts = torch.tensor([[[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, 1.0], [-0.1, -0.1, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [3, 1, 2]])
    frags = rasterize(verts, faces, torch.tensor([40.0, 40.0]), torch.tensor([15.5, 15.5]), (32, 32), znear=0.0)
    assert frags.mask.any()
    assert set(frags.face_idx.unique().tolist()) == {-1, 0}


# ------------------------------------------------------------------------------ valid (hidden hands)


def _two_hands(hand_model):
    g = torch.Generator().manual_seed(0)
    pose = 0.3 * torch.randn(2, 48, generator=g)
    hands = [
        hand_model.hand(side, betas=torch.zeros(1, 10), global_orient=pose[i : i + 1, :3], hand_pose=pose[i : i + 1, 3:],
                        transl=torch.tensor([[-0.05 + 0.1 * i, 0.0, 0.45]])).vertices
        for i, side in enumerate(("right", "left"))
    ]
    return torch.cat(hands, 1)  # (1, 1556, 3): right, then left


def _render(verts, faces, **kw):
    colours = torch.linspace(0, 1, verts.shape[1] * 3).view(verts.shape[1], 3)[: verts.shape[1]]
    return render_mesh(verts, faces, torch.tensor([150.0, 150.0]), torch.tensor([47.5, 39.5]), (80, 96),
                       vertex_colors=colours if kw.pop("colours", True) else None, background=0.2, **kw)


@pytest.mark.parametrize("hidden", [0, 1])
def test_a_hand_marked_invalid_renders_exactly_like_the_other_hand_alone(hand_model, hidden):
    verts = _two_hands(hand_model)
    faces = hand_model.faces_two_hand
    shown = 1 - hidden
    valid = torch.ones(1, 1556, dtype=torch.bool)
    valid[:, 778 * hidden : 778 * (hidden + 1)] = False
    both = _render(verts, faces, colours=False)
    out = _render(verts, faces, valid=valid, colours=False)
    # the other hand alone: its own vertices and faces (renumbered from 0)
    own = hand_model.faces_right if shown == 0 else hand_model.faces_left
    alone = _render(verts[:, 778 * shown : 778 * (shown + 1)], torch.as_tensor(own), colours=False)
    assert out["mask"].any() and (out["mask"] != both["mask"]).any()
    for key in ("image", "mask", "depth", "normals"):
        assert torch.equal(out[key], alone[key]), key
    # the same as the old way of hiding a hand: moving its vertices behind the camera
    moved = torch.where(valid[..., None], verts, torch.tensor([0.0, 0.0, -1.0]))
    old = _render(moved, faces)
    new = _render(verts, faces, valid=valid)
    for key in ("image", "mask", "depth", "normals", "face_idx"):
        assert torch.equal(new[key], old[key]), key


def test_valid_per_image_and_shared(hand_model):
    verts = _two_hands(hand_model).repeat(2, 1, 1)
    faces = hand_model.faces_two_hand
    valid = torch.ones(2, 1556, dtype=torch.bool)
    valid[1, :778] = False
    out = _render(verts, faces, valid=valid)
    full = _render(verts[:1], faces)
    left_only = _render(verts[:1], faces, valid=valid[1])  # (V,) shared by the batch
    assert torch.equal(out["image"][0], full["image"][0])
    assert torch.equal(out["image"][1], left_only["image"][0])
    assert torch.equal(_render(verts, faces, valid=torch.ones(1556, dtype=torch.bool))["image"], _render(verts, faces)["image"])
    with pytest.raises(ValueError, match="valid"):
        _render(verts, faces, valid=torch.ones(3, 1556, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        _render(verts, faces, valid=torch.ones(2, 1556))
