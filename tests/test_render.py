"""Tests for handrecon.render: camera projection, z-buffer rasterization, interpolation, shading.

Reference results are computed independently in this file (per-pixel Python loops in float64,
half-plane tests in numpy), never by calling the code under test a second time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handrecon.camera import intrinsics_matrix, project
from handrecon.camera import unproject as unproject_pixels
from handrecon.render import (
    composite,
    face_normals,
    interpolate,
    rasterize,
    render_mesh,
    shade_lambert,
    vertex_normals,
)
from handrecon.render.raster import _zbuffer

F32 = torch.float32
F64 = torch.float64


def unproject(
    xy: list[tuple[float, float]], z: list[float], focal=(40.0, 40.0), princpt=(7.5, 5.5)
) -> torch.Tensor:
    """Camera-frame points (N, 3) that project to pixel coords `xy` at depths `z` (float64)."""
    out = []
    for (x, y), d in zip(xy, z):
        out.append(((x - princpt[0]) * d / focal[0], (y - princpt[1]) * d / focal[1], d))
    return torch.tensor(out, dtype=F64)


def random_scene(g: torch.Generator, n_faces: int, H: int, W: int, z_range=(1.0, 3.0), dtype=F64):
    """Independent random triangles over an H x W image: verts (3*n_faces, 3), faces, focal, princpt."""
    focal = torch.tensor([0.9 * W, 0.8 * W], dtype=dtype) * (
        1 + 0.2 * torch.rand(2, generator=g, dtype=dtype)
    )
    princpt = torch.tensor([W / 2 - 0.3, H / 2 + 0.2], dtype=dtype)
    xy = torch.rand(n_faces * 3, 2, generator=g, dtype=dtype) * torch.tensor([W + 6, H + 6], dtype=dtype) - 3
    z = z_range[0] + (z_range[1] - z_range[0]) * torch.rand(n_faces * 3, generator=g, dtype=dtype)
    verts = torch.cat([(xy - princpt) / focal * z[:, None], z[:, None]], dim=1)
    faces = torch.arange(n_faces * 3).view(n_faces, 3)
    return verts, faces, focal, princpt


def stack_scenes(scenes, dtype=None):
    """A batch of random scenes sharing the first scene's faces: verts, faces, focal, princpt."""
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)  # noqa: E731
    return (
        cast(torch.stack([s[0] for s in scenes])),
        scenes[0][1],
        cast(torch.stack([s[2] for s in scenes])),
        cast(torch.stack([s[3] for s in scenes])),
    )


def naive_reference(verts, faces, focal, princpt, H, W, znear=1e-3, edge_tol=1e-6, depth_tol=1e-5):
    """Per-pixel, per-face loop in float64. Returns face_idx (H, W) int, depth (H, W) float (0 on
    background) and `ambiguous` (H, W) bool: pixels whose centre is within `edge_tol` (in
    barycentric units) of some face's edge, or where the two nearest faces are within
    `depth_tol` in depth, where a float32 rasterizer may legitimately decide either way."""
    v = verts.double().tolist()
    fx, fy = (float(t) for t in focal)
    cx, cy = (float(t) for t in princpt)
    tris = []
    for f in faces.tolist():
        p = [v[i] for i in f]
        if min(q[2] for q in p) < znear:
            tris.append(None)
            continue
        tris.append([(fx * q[0] / q[2] + cx, fy * q[1] / q[2] + cy, q[2]) for q in p])
    face_idx = np.full((H, W), -1)
    depth = np.zeros((H, W))
    ambiguous = np.zeros((H, W), dtype=bool)
    for r in range(H):
        for c in range(W):
            hits = []
            for k, t in enumerate(tris):
                if t is None:
                    continue
                (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = t
                area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                if abs(area) < 1e-12:
                    continue
                l0 = ((x1 - c) * (y2 - r) - (x2 - c) * (y1 - r)) / area
                l1 = ((x2 - c) * (y0 - r) - (x0 - c) * (y2 - r)) / area
                l2 = 1.0 - l0 - l1
                m = min(l0, l1, l2)
                if abs(m) < edge_tol:
                    ambiguous[r, c] = True
                if m >= 0:
                    hits.append((1.0 / (l0 / z0 + l1 / z1 + l2 / z2), k))
            if hits:
                hits.sort()
                depth[r, c], face_idx[r, c] = hits[0]
                if len(hits) > 1 and hits[1][0] - hits[0][0] < depth_tol:
                    ambiguous[r, c] = True
    return face_idx, depth, ambiguous


def inside_polygon(
    poly_xy: np.ndarray, H: int, W: int, margin: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres strictly inside / within `margin` of the boundary of a convex polygon (numpy)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    n = len(poly_xy)
    signed = []
    for i in range(n):
        (ax, ay), (bx, by) = poly_xy[i], poly_xy[(i + 1) % n]
        length = np.hypot(bx - ax, by - ay)
        signed.append(((bx - ax) * (ys - ay) - (by - ay) * (xs - ax)) / length)  # distance to the edge line
    signed = np.stack(signed)
    if (signed.sum(0) < 0).all():  # make "inside" positive whatever the polygon's orientation
        signed = -signed
    inside = (signed > margin).all(0)
    on_edge = (np.abs(signed) <= margin).any(0) & (signed >= -margin).all(0)
    return inside, on_edge


# --------------------------------------------------------------------------------------- camera


def test_project_points_formula_and_pixel_convention():
    pts = torch.tensor([[[0.0, 0.0, 2.0], [0.1, -0.2, 0.5]]], dtype=F64)
    focal = torch.tensor([[100.0, 120.0]], dtype=F64)
    princpt = torch.tensor([[63.5, 47.5]], dtype=F64)
    xy = project(pts, focal, princpt)
    # On the optical axis -> principal point; (63.5, 47.5) is the centre of a 128 x 96 image.
    assert torch.allclose(xy[0, 0], torch.tensor([63.5, 47.5], dtype=F64))
    assert torch.allclose(
        xy[0, 1], torch.tensor([100 * 0.1 / 0.5 + 63.5, 120 * -0.2 / 0.5 + 47.5], dtype=F64)
    )
    K = intrinsics_matrix(focal, princpt)
    assert torch.allclose(K[0], torch.tensor([[100.0, 0, 63.5], [0, 120.0, 47.5], [0, 0, 1]], dtype=F64))
    back = unproject_pixels(xy, pts[..., 2], focal, princpt)
    assert torch.allclose(back, pts)


def test_bad_shapes_raise_value_errors_naming_the_argument():
    v = torch.zeros(1, 3, 3)
    v[..., 2] = 1
    f = torch.tensor([[0, 1, 2]])
    focal, princpt = torch.tensor([10.0, 10.0]), torch.tensor([4.0, 4.0])
    with pytest.raises(ValueError, match=r"verts_cam .*\(1, 3, 2\)"):
        rasterize(v[..., :2], f, focal, princpt, (8, 8))
    with pytest.raises(ValueError, match=r"faces .*\(1, 4\)"):
        rasterize(v, torch.tensor([[0, 1, 2, 0]]), focal, princpt, (8, 8))
    with pytest.raises(ValueError, match=r"faces .*\[0, 5\]"):
        rasterize(v, torch.tensor([[0, 1, 5]]), focal, princpt, (8, 8))
    with pytest.raises(ValueError, match=r"focal .*\(3,\)"):
        rasterize(v, f, torch.tensor([1.0, 2.0, 3.0]), princpt, (8, 8))
    with pytest.raises(ValueError, match=r"princpt .*\(2, 2\)"):
        rasterize(v, f, focal, torch.zeros(2, 2), (8, 8))
    with pytest.raises(ValueError, match="image_size"):
        rasterize(v, f, focal, princpt, (8, 8, 3))
    with pytest.raises(ValueError, match="faces must be an integer"):
        rasterize(v, f.float(), focal, princpt, (8, 8))


# ---------------------------------------------------------------------------------- rasterizer


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_per_pixel_reference(seed, dtype):
    H, W = 12, 16
    g = torch.Generator().manual_seed(seed)
    scenes = [random_scene(g, 7, H, W) for _ in range(2)]
    # Face 0 of image 0 straddles znear: rasterizer and reference must both skip it.
    scenes[0][0][0, 2] = 0.05
    verts, faces, focal, princpt = stack_scenes(scenes, dtype)
    frags = rasterize(verts, faces, focal, princpt, (H, W), znear=0.5)
    n_checked = 0
    for b in range(2):
        ref_idx, ref_depth, amb = naive_reference(verts[b], faces, focal[b], princpt[b], H, W, znear=0.5)
        ok = ~amb
        n_checked += ok.sum()
        got_idx = frags.face_idx[b].numpy()
        got_depth = frags.depth[b].double().numpy()
        np.testing.assert_array_equal(got_idx[ok], ref_idx[ok])
        np.testing.assert_allclose(got_depth[ok], ref_depth[ok], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(frags.mask[b].numpy()[ok], ref_idx[ok] >= 0)
        assert (ref_idx[ok] >= 0).sum() > 20 and (ref_idx[ok] < 0).sum() > 5  # not a vacuous scene
    assert n_checked > 0.9 * 2 * H * W
    assert (frags.face_idx[0] != 0).all()  # the face behind znear never shows


def test_single_triangle_covers_exactly_the_centres_inside_it():
    H, W = 12, 16
    Z = 1.7
    tri_xy = np.array([[2.3, 1.7], [13.6, 4.2], [6.1, 10.8]])
    verts = unproject([tuple(p) for p in tri_xy], [Z, Z, Z])[None].float()
    frags = rasterize(
        verts, torch.tensor([[0, 1, 2]]), torch.tensor([40.0, 40.0]), torch.tensor([7.5, 5.5]), (H, W)
    )
    inside, on_edge = inside_polygon(tri_xy, H, W, margin=1e-4)
    assert not on_edge.any()  # the vertices were chosen so that no centre is ambiguous
    assert inside.sum() > 30
    np.testing.assert_array_equal(frags.mask[0].numpy(), inside)
    np.testing.assert_array_equal(frags.face_idx[0].numpy(), np.where(inside, 0, -1))
    np.testing.assert_allclose(frags.depth[0].numpy()[inside], Z, rtol=1e-6)
    assert (frags.depth[0][~frags.mask[0]] == 0).all()
    assert (frags.bary[0][~frags.mask[0]] == 0).all()


@pytest.mark.parametrize("flip_near_winding", [False, True])
def test_nearer_triangle_wins_whatever_the_face_order(flip_near_winding):
    H, W = 12, 16
    near = unproject([(1.2, 1.3), (11.7, 2.1), (3.4, 10.6)], [1.0, 1.0, 1.0])
    far = unproject([(4.2, 0.4), (14.6, 6.3), (5.3, 11.4)], [2.0, 2.5, 3.0])
    verts = torch.cat([near, far])[None].float()
    focal, princpt = torch.tensor([40.0, 40.0]), torch.tensor([7.5, 5.5])
    fn = [0, 2, 1] if flip_near_winding else [0, 1, 2]
    in_near, _ = inside_polygon(np.array([[1.2, 1.3], [11.7, 2.1], [3.4, 10.6]]), H, W)
    in_far, _ = inside_polygon(np.array([[4.2, 0.4], [14.6, 6.3], [5.3, 11.4]]), H, W)
    assert (in_near & in_far).sum() > 10 and (in_far & ~in_near).sum() > 10
    for order in ([fn, [3, 4, 5]], [[3, 4, 5], fn]):
        faces = torch.tensor(order)
        near_id = 0 if order[0] == fn else 1
        frags = rasterize(verts, faces, focal, princpt, (H, W))
        got = frags.face_idx[0].numpy()
        assert (got[in_near] == near_id).all()
        assert (got[in_far & ~in_near] == 1 - near_id).all()
        np.testing.assert_allclose(frags.depth[0].numpy()[in_near], 1.0, rtol=1e-6)


def test_interpolated_xyz_matches_depth_and_reprojects_to_pixel_centres():
    H, W = 12, 16
    g = torch.Generator().manual_seed(3)
    verts, faces, focal, princpt = random_scene(g, 6, H, W, z_range=(0.5, 4.0))  # strongly slanted
    verts = verts[None].float()
    frags = rasterize(verts, faces, focal, princpt, (H, W))
    m = frags.mask[0]
    assert m.sum() > 50
    xyz = interpolate(frags, faces, verts)
    assert (xyz[0][~m] == 0).all()
    torch.testing.assert_close(xyz[0, ..., 2][m], frags.depth[0][m], rtol=1e-5, atol=0)
    rows, cols = torch.nonzero(m, as_tuple=True)
    proj = project(xyz[0][m][None], focal.float(), princpt.float())[0]
    torch.testing.assert_close(proj, torch.stack([cols, rows], dim=1).float(), rtol=0, atol=2e-3)
    bary = frags.bary[0][m]
    torch.testing.assert_close(bary.sum(-1), torch.ones(len(bary)), rtol=0, atol=1e-5)
    assert bary.min() >= -1e-5 and bary.max() <= 1 + 1e-5
    # Perspective correctness: a slanted face's screen-space and 3D barycentrics differ.
    xy = project(verts, focal.float(), princpt.float())[0]
    tri = xy[faces[frags.face_idx[0][m]]]  # (P, 3, 2)
    screen = torch.einsum("pk,pkc->pc", bary, tri)
    assert (screen - torch.stack([cols, rows], 1)).abs().max() > 1e-2


def grid_mesh(nx: int, ny: int, x0: float, y0: float, step: float, g: torch.Generator | None, jitter: float):
    """Regular grid of 2D vertices (pixel coords) with random diagonals; interior vertices jittered."""
    ys, xs = torch.meshgrid(torch.arange(ny + 1, dtype=F64), torch.arange(nx + 1, dtype=F64), indexing="ij")
    xy = torch.stack([x0 + step * xs, y0 + step * ys], -1)
    if g is not None and jitter > 0:
        interior = (xs > 0) & (xs < nx) & (ys > 0) & (ys < ny)
        xy[interior] += (torch.rand(int(interior.sum()), 2, generator=g, dtype=F64) - 0.5) * 2 * jitter
    idx = torch.arange((nx + 1) * (ny + 1)).view(ny + 1, nx + 1)
    faces = []
    for j in range(ny):
        for i in range(nx):
            a, b, c, d = idx[j, i], idx[j, i + 1], idx[j + 1, i], idx[j + 1, i + 1]
            if g is None or torch.rand(1, generator=g) < 0.5:
                faces += [(a, b, d), (a, d, c)]
            else:
                faces += [(a, b, c), (b, d, c)]
            if g is not None and torch.rand(1, generator=g) < 0.3:
                faces[-1] = faces[-1][::-1]  # inconsistent winding must not matter
    return xy.view(-1, 2), torch.tensor(faces)


@pytest.mark.parametrize("jitter", [0.0, 1.2])
def test_no_cracks_between_triangles_sharing_edges(jitter):
    # Outer boundary on half-integers (no centre ambiguous there), inner diagonals through
    # pixel centres exactly when jitter == 0, arbitrary shared edges otherwise; a slanted plane.
    H, W = 30, 40
    g = torch.Generator().manual_seed(7)
    xy, faces = grid_mesh(12, 9, 1.5, 1.5, 3.0, g, jitter)
    focal, princpt = torch.tensor([50.0, 55.0], dtype=F64), torch.tensor([19.5, 14.5], dtype=F64)
    z = 1.0 + 0.03 * xy[:, 0] + 0.02 * xy[:, 1]
    verts = torch.cat([(xy - princpt) / focal * z[:, None], z[:, None]], 1)[None].float()
    frags = rasterize(verts, faces, focal.float(), princpt.float(), (H, W))
    inside, _ = inside_polygon(np.array([[1.5, 1.5], [37.5, 1.5], [37.5, 28.5], [1.5, 28.5]]), H, W)
    np.testing.assert_array_equal(frags.mask[0].numpy(), inside)
    # Every covered pixel's winning face really contains its centre.
    assert frags.bary[0][frags.mask[0]].min() > -1e-5


def test_no_cracks_on_shared_edges_through_pixel_centres():
    # 512 quads, each split by a diagonal aimed through the centre of pixel (row 4, col 3) from a
    # random direction; rounding leaves the centre a hair to either side of the diagonal, where
    # an edge evaluation that is not exactly antisymmetric loses it to both triangles.
    N, H, W = 512, 8, 8
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([3.0, 4.0], dtype=F64)
    ang = torch.rand(N, generator=g, dtype=F64) * torch.pi
    d = torch.stack([ang.cos(), ang.sin()], 1)
    n = torch.stack([-d[:, 1], d[:, 0]], 1)
    r = lambda: torch.rand(N, 1, generator=g, dtype=F64)  # noqa: E731
    quad = torch.stack(
        [
            centre - (2 + 2 * r()) * d,
            centre + (2 + 2 * r()) * d,
            centre + 3 * n + (r() - 0.5) * d,
            centre - 3 * n + (r() - 0.5) * d,
        ],
        1,
    )  # (N, 4, 2)
    z = 1 + torch.rand(N, 4, 1, generator=g, dtype=F64)
    focal, princpt = torch.tensor([30.0, 31.0], dtype=F64), torch.tensor([3.3, 3.6], dtype=F64)
    verts = torch.cat([(quad - princpt) / focal * z, z], -1).float()
    faces = torch.tensor([[0, 1, 2], [1, 0, 3]])
    frags = rasterize(verts, faces, focal.float(), princpt.float(), (H, W))
    assert frags.mask[:, 4, 3].all()


def test_quad_of_two_triangles_is_solid():
    H, W = 12, 16
    corners = [(2.5, 1.5), (13.5, 1.5), (13.5, 9.5), (2.5, 9.5)]
    verts = unproject(corners, [1.0, 1.4, 1.8, 1.2])[None].float()
    focal, princpt = torch.tensor([40.0, 40.0]), torch.tensor([7.5, 5.5])
    inside, _ = inside_polygon(np.array(corners), H, W)
    for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 1, 3], [1, 2, 3]], [[2, 1, 0], [0, 2, 3]]):
        frags = rasterize(verts, torch.tensor(faces), focal, princpt, (H, W))
        np.testing.assert_array_equal(frags.mask[0].numpy(), inside)


def test_batch_equals_elements_alone_and_chunking_does_not_change_results():
    H, W = 12, 16
    g = torch.Generator().manual_seed(11)
    scenes = [random_scene(g, 8, H, W, dtype=F32) for _ in range(3)]
    verts, faces, focal, princpt = stack_scenes(scenes)
    batched = rasterize(verts, faces, focal, princpt, (H, W))
    for b in range(3):
        alone = rasterize(verts[b : b + 1], faces, focal[b : b + 1], princpt[b : b + 1], (H, W))
        assert torch.equal(alone.face_idx[0], batched.face_idx[b])
        torch.testing.assert_close(alone.depth[0], batched.depth[b], rtol=1e-6, atol=0)
        torch.testing.assert_close(alone.bary[0], batched.bary[b], rtol=0, atol=1e-6)
    tiny = rasterize(verts, faces, focal, princpt, (H, W), chunk=7)
    assert torch.equal(tiny.face_idx, batched.face_idx)
    # The span-limited candidate enumeration equals the plain bounding-box one, slivers included.
    sliver = random_scene(g, 40, H, W, dtype=F32)[0]
    sliver[1::3] = sliver[0::3] + 1e-3 * sliver[1::3]
    for v in (verts, sliver[None]):
        f = torch.arange(v.shape[1]).view(-1, 3)
        a = _zbuffer(v, f, focal[:1], princpt[:1], H, W, 1e-3, False, 5, spans=True)
        b = _zbuffer(v, f, focal[:1], princpt[:1], H, W, 1e-3, False, 1 << 20, spans=False)
        assert torch.equal(a, b)


def test_gradients_flow_from_interpolated_attributes_to_vertices():
    H, W = 10, 12
    g = torch.Generator().manual_seed(5)
    verts, faces, focal, princpt = random_scene(g, 4, H, W)
    verts = verts[None].clone().requires_grad_(True)
    colors = torch.rand(1, verts.shape[1], 3, generator=g, dtype=F64)

    def fn(v):
        frags = rasterize(v, faces, focal, princpt, (H, W))
        return interpolate(frags, faces, colors), frags.depth

    img, depth = fn(verts)
    (img.square().sum() + depth.sum()).backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
    # Analytic gradients agree with finite differences while visibility stays fixed.
    verts.grad = None
    assert torch.autograd.gradcheck(fn, (verts,), eps=1e-7, atol=1e-5, rtol=1e-4)


def test_cull_backfaces_and_znear():
    H, W = 12, 16
    focal, princpt = torch.tensor([40.0, 40.0]), torch.tensor([7.5, 5.5])
    xy = [(2.5, 1.5), (13.5, 2.5), (6.5, 10.5)]
    v = unproject(xy, [1.0, 1.0, 1.0])[None].float()
    n = face_normals(v, torch.tensor([[0, 1, 2]]))[0, 0]
    front, back = ([0, 1, 2], [0, 2, 1]) if n[2] < 0 else ([0, 2, 1], [0, 1, 2])
    assert rasterize(v, torch.tensor([front]), focal, princpt, (H, W), cull_backfaces=True).mask.any()
    assert not rasterize(v, torch.tensor([back]), focal, princpt, (H, W), cull_backfaces=True).mask.any()
    assert rasterize(v, torch.tensor([back]), focal, princpt, (H, W)).mask.any()
    assert not rasterize(v, torch.tensor([front]), focal, princpt, (H, W), znear=1.5).mask.any()
    behind = v.clone()
    behind[..., 2] *= -1  # behind the camera
    assert not rasterize(behind, torch.tensor([front]), focal, princpt, (H, W)).mask.any()
    empty = rasterize(v, torch.zeros(0, 3, dtype=torch.long), focal, princpt, (H, W))
    assert not empty.mask.any() and (empty.face_idx == -1).all()


def test_vertex_and_face_normals_of_an_octahedron():
    v = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])[None]
    faces = []
    for a in (0, 1):
        for b in (2, 3):
            for c in (4, 5):
                tri = [a, b, c]
                if torch.det(v[0, tri]) < 0:  # orient outward
                    tri = [a, c, b]
                faces.append(tri)
    faces = torch.tensor(faces)
    torch.testing.assert_close(vertex_normals(v * 2, faces), v)
    fn = face_normals(v, faces)
    torch.testing.assert_close(fn, v[:, faces].mean(2) / v[:, faces].mean(2).norm(dim=-1, keepdim=True))


# ------------------------------------------------------------------------------------- shading


def test_composite_puts_background_exactly_where_mask_is_false():
    g = torch.Generator().manual_seed(2)
    rgb = torch.rand(2, 5, 6, 3, generator=g)
    mask = torch.rand(2, 5, 6, generator=g) > 0.5
    for bg in (torch.rand(2, 3, generator=g), torch.rand(2, 5, 6, 3, generator=g)):
        out = composite(rgb, mask, bg)
        full = bg[:, None, None, :].expand_as(rgb) if bg.dim() == 2 else bg
        assert torch.equal(out[~mask], full[~mask])
        assert torch.equal(out[mask], rgb[mask])
    with pytest.raises(ValueError, match="background"):
        composite(rgb, mask, torch.zeros(4))


def test_lambert_facing_and_perpendicular_light():
    albedo = torch.tensor([0.5, 0.8, 1.0]).view(1, 1, 1, 3)
    light = torch.tensor([0.0, 0.0, -2.0])  # towards the camera; normalized inside
    facing = torch.tensor([0.0, 0.0, -1.0]).expand(1, 2, 2, 3)
    side = torch.tensor([1.0, 0.0, 0.0]).expand(1, 2, 2, 3)
    away = -facing
    amb, dif = 0.25, 0.6
    torch.testing.assert_close(
        shade_lambert(facing, albedo, light, amb, dif), (albedo * (amb + dif)).expand(1, 2, 2, 3)
    )
    torch.testing.assert_close(
        shade_lambert(side, albedo, light, amb, dif), (albedo * amb).expand(1, 2, 2, 3)
    )
    torch.testing.assert_close(
        shade_lambert(away, albedo, light, amb, dif), (albedo * amb).expand(1, 2, 2, 3)
    )
    torch.testing.assert_close(
        shade_lambert(away, albedo, light, amb, dif, two_sided=True),
        (albedo * (amb + dif)).expand(1, 2, 2, 3),
    )


def test_render_mesh_plane_facing_the_camera_is_lit_whatever_the_winding():
    H, W = 12, 16
    corners = [(2.5, 1.5), (13.5, 1.5), (13.5, 9.5), (2.5, 9.5)]
    verts = unproject(corners, [1.0, 1.0, 1.0, 1.0])[None].float()
    focal, princpt = torch.tensor([40.0, 40.0]), torch.tensor([7.5, 5.5])
    bg = torch.tensor([[0.1, 0.2, 0.3]])
    for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]], [[0, 1, 2], [0, 3, 2]]):
        out = render_mesh(
            verts, torch.tensor(faces), focal, princpt, (H, W), background=bg, ambient=0.3, diffuse=0.7
        )
        m = out["mask"][0]
        assert m.sum() == 11 * 8
        albedo = torch.tensor([0.85, 0.68, 0.58])
        torch.testing.assert_close(out["image"][0][m], albedo.expand(int(m.sum()), 3))
        assert torch.equal(out["image"][0][~m], bg.expand(int((~m).sum()), 3))
        torch.testing.assert_close(
            out["normals"][0][m], torch.tensor([0.0, 0.0, -1.0]).expand(int(m.sum()), 3)
        )


def test_render_mesh_per_image_ambient_and_light():
    H, W = 12, 16
    corners = [(2.5, 1.5), (13.5, 1.5), (13.5, 9.5), (2.5, 9.5)]
    verts = unproject(corners, [1.0, 1.0, 1.0, 1.0])[None].float().repeat(2, 1, 1)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    focal, princpt = torch.tensor([40.0, 40.0]), torch.tensor([7.5, 5.5])
    ambient = torch.tensor([0.2, 0.5]).view(2, 1, 1, 1)
    light = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # image 0: grazing light, 1: headlight
    colors = torch.tensor([0.5, 0.6, 1.0]).expand(4, 3)
    out = render_mesh(
        verts, faces, focal, princpt, (H, W), colors, ambient=ambient, diffuse=0.5, light_dir=light
    )
    m = out["mask"]
    torch.testing.assert_close(out["image"][0][m[0]], (colors[0] * 0.2).expand(int(m[0].sum()), 3))
    torch.testing.assert_close(out["image"][1][m[1]], (colors[0] * 1.0).expand(int(m[1].sum()), 3))
    normals = out["normals"]
    direct = shade_lambert(normals, colors[0].view(1, 1, 1, 3), light, ambient, 0.5)
    torch.testing.assert_close(out["image"][m], direct[m])
    with pytest.raises(ValueError, match="ambient"):
        render_mesh(verts, faces, focal, princpt, (H, W), ambient=torch.zeros(3))


def test_render_mesh_outputs_and_gradients():
    H, W = 12, 16
    g = torch.Generator().manual_seed(9)
    verts, faces, focal, princpt = random_scene(g, 6, H, W, dtype=F32)
    verts = verts[None].repeat(2, 1, 1)
    verts[1, :, 2] += 0.3
    verts.requires_grad_(True)
    colors = torch.rand(verts.shape[1], 3, generator=g, requires_grad=True)
    out = render_mesh(
        verts, faces, focal, princpt, (H, W), vertex_colors=colors, light_dir=torch.tensor([0.3, -0.2, -1.0])
    )
    img = out["image"]
    assert img.shape == (2, H, W, 3) and img.min() >= 0 and img.max() <= 1
    assert (img[~out["mask"]] == 0).all()
    assert torch.equal(out["face_idx"], out["fragments"].face_idx)
    n = out["normals"][out["mask"]]
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(len(n)))
    img.sum().backward()
    for t in (verts, colors):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    H, W = 48, 64
    g = torch.Generator().manual_seed(4)
    scenes = [random_scene(g, 60, H, W, dtype=F32) for _ in range(3)]
    verts, faces, focal, princpt = stack_scenes(scenes)
    cpu = render_mesh(verts, faces, focal, princpt, (H, W))
    gpu = render_mesh(verts.cuda(), faces.cuda(), focal.cuda(), princpt.cuda(), (H, W))
    same = cpu["face_idx"] == gpu["face_idx"].cpu()
    assert same.float().mean() > 0.999  # only centres within rounding of an edge may differ
    torch.testing.assert_close(gpu["depth"].cpu()[same], cpu["depth"][same], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu["image"].cpu()[same], cpu["image"][same], rtol=1e-4, atol=1e-4)
