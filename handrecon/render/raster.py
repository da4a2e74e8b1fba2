"""Batched z-buffer rasterization of triangle meshes in pure torch (CPU and CUDA).

Camera and pixel conventions are those of :mod:`handrecon.camera`: camera frame x right,
y down, z forward (metres); the centre of pixel (row r, col c) is at image coordinates (x=c, y=r).
A pixel is covered by a triangle when its *centre* lies inside the projected triangle.

How it works (see :func:`rasterize`):

1. Project all vertices; per face, compute its 2D corners and the integer bounding box of the
   pixel centres it can cover, clipped to the image. Faces with a vertex closer than ``znear``
   (or behind the camera), faces with a vertex marked not ``valid`` (a hand left out of the
   picture), degenerate faces and (optionally) back faces are dropped.
2. Enumerate candidates of all faces of all meshes in two levels, ``chunk`` at a time with
   ``repeat_interleave`` over run lengths: first the (face, pixel row) pairs of each bounding
   box, with a conservative bound of the triangle's span on that row, then the pixels of each
   span. Test each pixel with 2D edge functions and compute its depth by interpolating 1/z
   linearly in screen space (perspective-correct).
3. Resolve visibility with one ``scatter_reduce(..., "amin")`` per chunk on an int64 key holding
   the float32 bit pattern of the depth in the high 32 bits (for positive floats the bit pattern
   is monotonic in the value, so no quantization is needed) and the face index in the low 32
   bits: the nearest face wins, exact depth ties go to the lower face index.
4. Recompute the perspective-correct barycentrics and depth of each pixel's winning face from
   the vertex positions with autograd enabled, so ``bary``, ``depth`` and everything
   interpolated from them are differentiable w.r.t. the vertices (and the intrinsics).
   Visibility (which face wins, which pixels are covered) is piecewise constant and carries no
   gradient: silhouettes do not move under gradient descent.

Coverage rule: the inside test is inclusive (a centre exactly on an edge belongs to both faces
sharing the edge; the z-buffer then picks one). Edge functions are evaluated relative to the
pixel centre, ``e(a, b, p) = (a - p) x (b - p)``, which is exactly antisymmetric in floating
point (``e(a, b, p) == -e(b, a, p)`` bit for bit), so two triangles sharing an edge can never
both reject a pixel centre near that edge: meshes rasterize without cracks.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

import torch

from ..camera import MIN_DEPTH, check_intrinsics, project

__all__ = [
    "DEFAULT_CHUNK",
    "Fragments",
    "check_faces",
    "check_mesh",
    "check_valid",
    "face_normals",
    "interpolate",
    "interpolate_packed",
    "rasterize",
    "vertex_normals",
]

#: Candidates (face rows, then pixels) processed per chunk when ``chunk=None``, by device type
#: (read-only). Peak extra memory is roughly 400 bytes per candidate of the chunk (about 100 MB
#: on CPU, 800 MB on CUDA); on CPU, chunks that stay in cache are faster than large ones.
DEFAULT_CHUNK = MappingProxyType({"cpu": 1 << 18, "cuda": 1 << 21})

# Key of a pixel no face covers; larger than any real key (float32 bits of +inf << 32 | face).
_EMPTY_KEY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
# Faces whose projected doubled area (pixels^2) is below this are skipped: their barycentrics
# would be dominated by rounding. Such faces are far smaller than a pixel.
_MIN_AREA = 1e-8


class Fragments(NamedTuple):
    """Per-pixel rasterization output for a batch of B images of H x W pixels.

    Attributes:
        face_idx: (B, H, W) int64 index into ``faces`` of the visible face; -1 on background.
        bary: (B, H, W, 3) perspective-correct barycentric coordinates of the pixel centre in
            the visible face (weights of ``faces[face_idx, 0..2]``, summing to 1); 0 on
            background. Differentiable w.r.t. vertices and intrinsics.
        depth: (B, H, W) camera-space Z in metres of the visible surface at the pixel centre;
            0 (not +inf, so products with it stay finite) on background. Differentiable.
        mask: (B, H, W) bool, True where some face covers the pixel centre.
    """

    face_idx: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def check_mesh(verts: torch.Tensor, faces: torch.Tensor, name: str = "verts") -> torch.Tensor:
    """Validate (B, V, 3) floating `verts` and (F, 3) integer `faces` indexing into V.

    Returns `faces` as int64 on the device of `verts`. Raises ValueError naming the argument.
    """
    if not isinstance(verts, torch.Tensor) or verts.dim() != 3 or verts.shape[-1] != 3:
        shape = tuple(verts.shape) if isinstance(verts, torch.Tensor) else type(verts).__name__
        raise ValueError(f"{name} must have shape (B, V, 3), got {shape}")
    if not verts.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {verts.dtype}")
    return check_faces(faces, verts.shape[1], verts.device, name)


def check_faces(
    faces: torch.Tensor, n_verts: int, device: torch.device | None = None, name: str = "verts"
) -> torch.Tensor:
    """Validate (F, 3) integer `faces` indexing into `n_verts` vertices (of the argument `name`).

    Returns them as int64 on `device`. Raises ValueError naming the argument otherwise.
    """
    if not isinstance(faces, torch.Tensor) or faces.dim() != 2 or faces.shape[-1] != 3:
        shape = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise ValueError(f"faces must have shape (F, 3), got {shape}")
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise ValueError(f"faces must be an integer tensor, got dtype {faces.dtype}")
    faces = faces.to(device=device if device is not None else faces.device, dtype=torch.long)
    if faces.numel():
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0 or hi >= n_verts:
            raise ValueError(
                f"faces must index vertices in [0, {n_verts - 1}] ({name} has V={n_verts}), "
                f"got indices in [{lo}, {hi}]"
            )
    return faces


def check_valid(valid, batch: int, n_verts: int, device: torch.device | None = None) -> torch.Tensor | None:
    """Validate a per-vertex `valid` mask: None, (V,) or (B, V) bool. Returns None or (B, V) bool
    on `device`. Raises ValueError naming the argument otherwise."""
    if valid is None:
        return None
    valid = torch.as_tensor(valid, device=device)
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")
    if valid.dim() == 1:
        valid = valid[None]
    if valid.dim() != 2 or valid.shape[1] != n_verts or valid.shape[0] not in (1, batch):
        raise ValueError(f"valid must have shape ({batch}, {n_verts}) or ({n_verts},), got {tuple(valid.shape)}")
    return valid.expand(batch, n_verts)


def _check_image_size(image_size) -> tuple[int, int]:
    try:
        H, W = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from None
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size must be positive (H, W), got {image_size!r}")
    return H, W


def _edges(x0, y0, x1, y1, x2, y2, px, py):
    """Edge functions (w0, w1, w2) of pixel centres (px, py): w_i is twice the signed area of the
    sub-triangle opposite vertex i. Evaluated relative to the pixel so that each is exactly
    antisymmetric under swapping the edge's endpoints (see module docstring)."""
    ax, ay = x0 - px, y0 - py
    bx, by = x1 - px, y1 - py
    cx, cy = x2 - px, y2 - py
    return bx * cy - by * cx, cx * ay - cy * ax, ax * by - ay * bx


def rasterize(
    verts_cam: torch.Tensor,
    faces: torch.Tensor,
    focal: torch.Tensor,
    princpt: torch.Tensor,
    image_size: tuple[int, int],
    znear: float = 1e-3,
    cull_backfaces: bool = False,
    chunk: int | None = None,
    valid: torch.Tensor | None = None,
) -> Fragments:
    """Rasterize a batch of meshes that share one face array with a z-buffer.

    Args:
        verts_cam: (B, V, 3) vertices in metres, camera frame (x right, y down, z forward).
        faces: (F, 3) int64 vertex indices into V, shared by all B meshes.
        focal: (B, 2) (fx, fy) pixels, or (2,) for the whole batch.
        princpt: (B, 2) (cx, cy) pixels, or (2,) for the whole batch. The centre of pixel
            (row r, col c) is at image coordinates (x=c, y=r).
        image_size: (H, W) in pixels.
        znear: metres; faces with any vertex at Z < znear (or at Z <= :data:`handrecon.camera.MIN_DEPTH`,
            whatever `znear`) are skipped entirely (no clipping).
        cull_backfaces: if True, drop faces whose normal ``(v1 - v0) x (v2 - v0)`` points away
            from the camera; by default faces are double-sided.
        chunk: number of candidates (face rows, then pixels) processed at once; bounds peak
            memory (about 400 bytes each) without changing the result. None: a per-device
            default from :data:`DEFAULT_CHUNK`.
        valid: (B, V) or (V,) bool, default all True: faces with any vertex marked False are
            skipped, as if that part of the mesh were absent. This is how a hand is left out of
            a picture (its vertices keep their positions; nothing else changes).

    Returns:
        :class:`Fragments` with face_idx / bary / depth / mask of shape (B, H, W[, 3]); depth is
        0 on background. ``bary`` and ``depth`` are differentiable w.r.t. `verts_cam`, `focal`
        and `princpt`; which face is visible is not (no silhouette gradients).
    """
    faces = check_mesh(verts_cam, faces, "verts_cam")
    H, W = _check_image_size(image_size)
    if chunk is None:
        chunk = DEFAULT_CHUNK.get(verts_cam.device.type, DEFAULT_CHUNK["cuda"])
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of candidates, got {chunk}")
    B, _, _ = verts_cam.shape
    F = faces.shape[0]
    if F >= 2**31:
        raise ValueError(f"faces has {F} rows; at most 2**31 - 1 are supported")
    focal, princpt = check_intrinsics(focal, princpt, B)
    if verts_cam.dtype in (torch.float16, torch.bfloat16):
        verts_cam = verts_cam.float()
    device, dtype = verts_cam.device, verts_cam.dtype
    focal, princpt = focal.to(dtype), princpt.to(dtype)  # project in the vertices' precision
    valid = check_valid(valid, B, verts_cam.shape[1], device)

    with torch.no_grad():
        key = _zbuffer(
            verts_cam.detach(), faces, focal.detach(), princpt.detach(), H, W, znear, cull_backfaces, chunk,
            valid=valid,
        )

    mask_flat = key != _EMPTY_KEY
    face_idx = torch.where(mask_flat, key & _LOW32, -1)
    pix = mask_flat.nonzero().squeeze(1)
    face_vis = face_idx.index_select(0, pix)

    # Differentiable recomputation for the covered pixels only, with the same edge-function
    # expressions as the z-buffer pass. One gather of the winning face's projected corners
    # and depths from a flat (B*V, 3) table of [x_pixel, y_pixel, Z].
    b = pix // (H * W)
    py = ((pix // W) % H).to(dtype)
    px = (pix % W).to(dtype)
    V = verts_cam.shape[1]
    xyz = torch.cat([project(verts_cam, focal, princpt), verts_cam[..., 2:]], dim=-1).reshape(B * V, 3)
    corners = xyz.index_select(0, (faces.index_select(0, face_vis) + (b * V)[:, None]).view(-1)).view(
        -1, 3, 3
    )  # (P, 3, [x y z])
    x0, x1, x2 = corners[:, :, 0].unbind(1)
    y0, y1, y2 = corners[:, :, 1].unbind(1)
    w = torch.stack(_edges(x0, y0, x1, y1, x2, y2, px, py), dim=1)  # (P, 3)
    area = (x0 - x2) * (y1 - y2) - (y0 - y2) * (x1 - x2)
    l_over_z = w / (area[:, None] * corners[:, :, 2])  # screen-space barycentrics / vertex depth
    inv_depth = l_over_z.sum(1)
    depth = 1.0 / inv_depth
    bary = l_over_z / inv_depth[:, None]

    # Scatter into background-filled buffers; in-place index_put_ on a fresh tensor is recorded
    # by autograd like the out-of-place version but skips a full-image copy.
    n = B * H * W
    depth_full = torch.zeros(n, dtype=dtype, device=device)
    depth_full[pix] = depth
    bary_full = torch.zeros(n, 3, dtype=dtype, device=device)
    bary_full[pix] = bary
    return Fragments(
        face_idx=face_idx.view(B, H, W),
        bary=bary_full.view(B, H, W, 3),
        depth=depth_full.view(B, H, W),
        mask=mask_flat.view(B, H, W),
    )


def _split(
    starts: torch.Tensor, ends: torch.Tensor, ends_host: torch.Tensor, s: int, e: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Owner run and offset in it of positions [s, e) of a concatenation of runs.

    Run i covers positions [starts[i], ends[i]) (exclusive prefix sums of the run lengths and
    inclusive ones, on the device; `ends_host` is a CPU copy of `ends` so that finding the runs
    overlapping [s, e) needs no device round trip). Returns (owner, offset), both (e - s,) int64.
    """
    f0 = int(torch.searchsorted(ends_host, s, right=True))
    f1 = int(torch.searchsorted(ends_host, e - 1, right=True))
    first = starts[f0 : f1 + 1]
    n_in = (ends[f0 : f1 + 1] - first).clone()
    n_in[0] -= s - first[0]
    n_in[-1] -= ends[f1] - e
    owner = torch.repeat_interleave(torch.arange(f0, f1 + 1, device=ends.device), n_in, output_size=e - s)
    offset = torch.arange(s, e, device=ends.device) - starts[owner]
    return owner, offset


def _zbuffer(
    verts: torch.Tensor,
    faces: torch.Tensor,
    focal: torch.Tensor,
    princpt: torch.Tensor,
    H: int,
    W: int,
    znear: float,
    cull_backfaces: bool,
    chunk: int,
    spans: bool = True,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B*H*W,) int64 z-buffer keys (depth bits << 32 | face index); _EMPTY_KEY where uncovered.

    Candidates are enumerated in two levels: (face, row) pairs over each face's bounding box,
    then the pixels of each row between conservative bounds of the triangle's span on that row
    (the whole box width if `spans` is False; the result is identical, only slower). The exact
    inside test is always the per-pixel edge-function test, so the span bounds only need to be
    generous, never exact. `valid`: None or (B, V) bool, as checked by :func:`check_valid`.
    """
    B = verts.shape[0]
    F = faces.shape[0]
    device, dtype = verts.device, verts.dtype
    keybuf = torch.full((B * H * W,), _EMPTY_KEY, dtype=torch.long, device=device)
    if F == 0 or B == 0:
        return keybuf

    xy = project(verts, focal, princpt)
    tri = xy[:, faces]  # (B, F, 3, 2)
    tz = verts[:, faces, 2]  # (B, F, 3)
    x, y = tri[..., 0], tri[..., 1]
    area = (x[..., 0] - x[..., 2]) * (y[..., 1] - y[..., 2]) - (y[..., 0] - y[..., 2]) * (
        x[..., 1] - x[..., 2]
    )
    keep = (tz >= znear).all(-1) & (tz > MIN_DEPTH).all(-1) & torch.isfinite(tz).all(-1)
    keep &= torch.isfinite(tri).all(-1).all(-1)
    keep &= area.abs() > _MIN_AREA
    if valid is not None:
        keep &= valid[:, faces].all(-1)
    if cull_backfaces:
        v = verts[:, faces]  # (B, F, 3, 3)
        normal = torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)
        keep &= (normal * v[:, :, 0]).sum(-1) < 0  # front faces have normals pointing at the camera

    # Integer bounding box of covered pixel centres, clipped to the image. Clamp in floating
    # point first so huge projected coordinates cannot overflow the integer conversion.
    bx0 = torch.ceil(x.amin(-1)).clamp(0, W)
    bx1 = torch.floor(x.amax(-1)).clamp(-1, W - 1)
    by0 = torch.ceil(y.amin(-1)).clamp(0, H)
    by1 = torch.floor(y.amax(-1)).clamp(-1, H - 1)
    bh = torch.where(keep & (bx1 >= bx0), by1 - by0 + 1, 0).clamp(min=0).long()  # rows per face
    sel = bh.view(-1).nonzero().squeeze(1)  # flat b*F + f of faces with candidate rows
    if sel.numel() == 0:
        return keybuf

    # Per-face table with every face turned counter-clockwise in the image (positive area) by
    # swapping vertices 1 and 2 where needed: the inside test becomes min(w0, w1, w2) >= 0 and
    # the swap keeps the edge functions bit-exact negatives across shared edges.
    flip = (area.view(-1)[sel] < 0)[:, None]
    t3 = tri.view(B * F, 3, 2)[sel]
    iz = (1.0 / tz).view(B * F, 3)[sel]
    order = torch.where(flip, torch.tensor([0, 2, 1], device=device), torch.tensor([0, 1, 2], device=device))
    t3 = t3.gather(1, order[:, :, None].expand(-1, 3, 2))
    iz = iz.gather(1, order)
    face_tab = torch.cat(
        [
            t3.reshape(-1, 6),
            iz,
            area.view(-1)[sel, None].abs(),
            bx0.view(-1)[sel, None],
            bx1.view(-1)[sel, None],
        ],
        dim=1,
    )  # (S, 12): x0 y0 x1 y1 x2 y2 | 1/z0 1/z1 1/z2 | area | box x0 x1
    face_y0 = by0.view(-1)[sel].long()
    face_img = sel // F
    face_local = sel % F
    row_count = bh.view(-1)[sel]
    row_ends = row_count.cumsum(0)
    row_starts = row_ends - row_count
    row_ends_host = row_ends.cpu()
    n_rows = int(row_ends_host[-1])

    for rs in range(0, n_rows, chunk):
        re = min(rs + chunk, n_rows)
        rface, roff = _split(row_starts, row_ends, row_ends_host, rs, re)
        x0, y0, x1, y1, x2, y2, iz0, iz1, iz2, a, lo, hi = face_tab.index_select(0, rface).t().contiguous()
        row_y = face_y0.index_select(0, rface) + roff
        py = row_y.to(dtype)
        # Vertex y relative to the row's pixel centres: shared by all pixels of the row.
        y0, y1, y2 = y0 - py, y1 - py, y2 - py
        if spans:
            # Along the row, edge (p, q) is c + k * u with u = px - lo, k = p.y - q.y and c its
            # value at u = 0. Keep u where c + k*u >= -tol for all three edges; tol covers the
            # rounding of both this and the per-pixel evaluation with a wide margin.
            u0, u1, u2 = x0 - lo, x1 - lo, x2 - lo
            bound_lo, bound_hi = torch.zeros_like(lo), hi - lo
            for (px_, py_), (qx_, qy_) in (((u1, y1), (u2, y2)), ((u2, y2), (u0, y0)), ((u0, y0), (u1, y1))):
                c = px_ * qy_ - py_ * qx_
                k = py_ - qy_
                tol = 1e-5 * (px_.abs() * qy_.abs() + py_.abs() * qx_.abs() + k.abs()) + 1e-6
                t = (-c - tol) / k
                bound_lo = torch.where(k > 0, torch.maximum(bound_lo, t), bound_lo)
                bound_hi = torch.where(k < 0, torch.minimum(bound_hi, t), bound_hi)
                bound_hi = torch.where((k == 0) & (c < -tol), -1.0, bound_hi)
            xl = lo + torch.ceil(bound_lo.clamp(max=W))
            xr = lo + torch.floor(bound_hi.clamp(min=-1))
        else:
            xl, xr = lo, hi
        npix = (xr - xl + 1).clamp(min=0).long()
        pix_ends = npix.cumsum(0)
        pix_starts = pix_ends - npix
        pix_ends_host = pix_ends.cpu()
        n_pix = int(pix_ends_host[-1])
        if n_pix == 0:
            continue
        # Row tables for the pixel level, one contiguous column each (gathering whole rows of a
        # table and computing on strided columns is several times slower on CPU).
        row_cols = (x0, y0, x1, y1, x2, y2, iz0, iz1, iz2, a, xl)
        row_pix0 = (
            face_img.index_select(0, rface) * (H * W) + row_y * W + xl.long()
        )  # flat index of the span start
        row_face = face_local.index_select(0, rface)
        for ps in range(0, n_pix, chunk):
            pe = min(ps + chunk, n_pix)
            rid, poff = _split(pix_starts, pix_ends, pix_ends_host, ps, pe)
            x0, y0, x1, y1, x2, y2, iz0, iz1, iz2, a, xl = (col.index_select(0, rid) for col in row_cols)
            px = xl + poff.to(dtype)
            x0, x1, x2 = x0 - px, x1 - px, x2 - px
            # Same expressions as _edges, with vertex coordinates already pixel-relative.
            w0 = x1 * y2 - y1 * x2
            w1 = x2 * y0 - y2 * x0
            w2 = x0 * y1 - y0 * x1
            inside = torch.minimum(torch.minimum(w0, w1), w2) >= 0
            z = (a / (w0 * iz0 + w1 * iz1 + w2 * iz2)).float()
            k = (z.view(torch.int32).long() << 32) | row_face.index_select(0, rid)
            k = torch.where(inside, k, _EMPTY_KEY)
            keybuf.scatter_reduce_(0, row_pix0.index_select(0, rid) + poff, k, reduce="amin")
    return keybuf


def interpolate(fragments: Fragments, faces: torch.Tensor, vertex_attrs: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at the pixel centres with the fragments' barycentrics.

    Args:
        fragments: output of :func:`rasterize` for B images of H x W.
        faces: (F, 3) int64, the face array given to :func:`rasterize`.
        vertex_attrs: (B, V, C) any per-vertex quantity (colours, normals, camera-space xyz...).

    Returns:
        (B, H, W, C) perspective-correct interpolation; exactly 0 on background. Differentiable
        w.r.t. `vertex_attrs` and, through ``fragments.bary``, the vertex positions.
    """
    B, H, W = fragments.face_idx.shape
    pix, val = interpolate_packed(fragments, faces, vertex_attrs)
    out = vertex_attrs.new_zeros(B * H * W, val.shape[1])
    out[pix] = val  # in-place on a fresh tensor: recorded by autograd, no full-image copy
    return out.view(B, H, W, -1)


def interpolate_packed(
    fragments: Fragments, faces: torch.Tensor, vertex_attrs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`interpolate` but only for covered pixels, without building full images.

    Returns (pix (P,) int64 flat indices into B*H*W of the pixels where ``fragments.mask`` is
    True, in increasing order; values (P, C)). Cheaper when the mesh covers a small part of
    the image and the values are processed further before being written into an image.
    """
    B, H, W = fragments.face_idx.shape
    if vertex_attrs.dim() != 3 or vertex_attrs.shape[0] != B:
        raise ValueError(f"vertex_attrs must have shape ({B}, V, C), got {tuple(vertex_attrs.shape)}")
    faces = check_faces(faces, vertex_attrs.shape[1], vertex_attrs.device, "vertex_attrs")
    V, C = vertex_attrs.shape[1:]
    pix = fragments.mask.reshape(-1).nonzero().squeeze(1)
    b = pix // (H * W)
    vidx = faces.index_select(0, fragments.face_idx.reshape(-1).index_select(0, pix)) + (b * V)[:, None]
    attrs = vertex_attrs.reshape(B * V, C).index_select(0, vidx.view(-1)).view(-1, 3, C)  # (P, 3, C)
    bary = fragments.bary.reshape(-1, 3).index_select(0, pix).to(attrs.dtype)
    val = attrs[:, 0] * bary[:, 0:1] + attrs[:, 1] * bary[:, 1:2] + attrs[:, 2] * bary[:, 2:3]
    return pix, val


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, F, 3) unit face normals ``normalize((v1 - v0) x (v2 - v0))`` of (B, V, 3) verts.

    Degenerate faces get a zero normal.
    """
    faces = check_mesh(verts, faces)
    v = verts[:, faces]  # (B, F, 3, 3)
    n = torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-20)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) unit vertex normals of (B, V, 3) verts: sum of incident face normals weighted by
    face area (the unnormalized cross product), normalized. Orientation follows the winding:
    counter-clockwise faces seen from outside give outward normals. Unused vertices get zero."""
    faces = check_mesh(verts, faces)
    B, V, _ = verts.shape
    v = verts[:, faces]
    n = torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)  # (B, F, 3), |n| = 2 area
    acc = verts.new_zeros(B, V, 3)
    for c in range(3):  # three corners, not a loop over faces
        acc = acc.index_add(1, faces[:, c], n)
    return torch.nn.functional.normalize(acc, dim=-1, eps=1e-20)
