#!/usr/bin/env python
"""Benchmark the batched torch mesh renderer (handrecon.render) on two-hand-sized meshes.

Builds a batch of synthetic two-hand-like meshes (two deformed, open-ended ellipsoids of 778
vertices / 1538 faces each, the size of MANO; 1556 vertices / 3076 faces in all) or loads one
from ``--mesh-npz``, places them in front of the camera so they fill a good part of the image,
and times :func:`handrecon.render.rasterize` and :func:`handrecon.render.render_mesh` for the
whole batch (forward, and forward+backward), the z-buffer pass with per-row span bounds against
whole bounding boxes, and the batched renderer against the same renderer called one image at a
time. Speeds are reported as times and ratios, for one process on one device.

Usage: ``tools/bench/render.py --batch 64 --size 256 --device auto --repeats 3``
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from handrecon.cli import UserError, run_tool
from handrecon.render import DEFAULT_CHUNK, rasterize, render_mesh
from handrecon.render.raster import _zbuffer  # (internal pass, for the span-vs-box ratio)


def blob_topology(
    rings: int = 48, segments: int = 16, splits: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface parameters and faces of a pole-capped tube, outward-wound.

    A pole plus `rings` rings of `segments` vertices, open at the last ring (like MANO's wrist),
    then `splits` faces split at their centroid: with the defaults, 778 vertices and 1538 faces.
    Returns uv (R, 2) in [0, 1] x [0, 1) for the R = 1 + rings * segments grid vertices (u along
    the axis, v around it), parents (splits, 3) the grid vertices whose centroid each extra
    vertex is (vertex R + k for row k), and faces (F, 3) int64.
    """
    uv = [(0.0, 0.0)]
    for i in range(rings):
        for j in range(segments):
            uv.append(((i + 1) / (rings + 1), j / segments))
    uv = np.array(uv)
    faces = []
    ring = lambda i, j: 1 + i * segments + (j % segments)  # noqa: E731
    for j in range(segments):
        faces.append((0, ring(0, j), ring(0, j + 1)))
    for i in range(rings - 1):
        for j in range(segments):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [(a, d, b), (a, c, d)]
    # Split a few faces spread over the surface at their centroid to reach MANO's counts.
    parents, new_faces = [], []
    picked = set(np.linspace(segments, len(faces) - 1, splits).astype(int).tolist())
    for k, (a, b, c) in enumerate(faces):
        if k in picked:
            m = len(uv) + len(parents)
            parents.append((a, b, c))
            new_faces += [(a, b, m), (b, c, m), (c, a, m)]
        else:
            new_faces.append((a, b, c))
    return uv, np.array(parents, dtype=np.int64).reshape(-1, 3), np.array(new_faces, dtype=np.int64)


def synthetic_two_hands(
    batch: int, size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random two-hand-like meshes in front of a camera that frames them in a `size` image.

    Returns verts (B, 1556, 3) metres camera frame, faces (3076, 3), focal (B, 2), princpt (B, 2).
    """
    g = torch.Generator().manual_seed(seed)
    uv, parents, faces = blob_topology()
    uv = torch.from_numpy(uv).float()
    parents = torch.from_numpy(parents)
    V = uv.shape[0] + parents.shape[0]
    theta = uv[:, 0] * math.pi * 0.94  # stop short of the far pole: open "wrist"
    phi = uv[:, 1] * 2 * math.pi
    hands = []
    for side in (1.0, -1.0):
        # Hand-sized ellipsoid (18 cm long, 9 cm wide, 4 cm thick) with random bumps ("fingers").
        amp = 0.1 + 0.15 * torch.rand(batch, 1, generator=g)
        freq = torch.randint(3, 6, (batch, 1), generator=g).float()
        bump = 1 + amp * torch.sin(freq * phi) * torch.sin(theta)
        local = torch.stack(
            [
                0.045 * torch.sin(theta) * torch.cos(phi) * bump,
                -0.09 * torch.cos(theta).expand(batch, -1),
                0.02 * torch.sin(theta) * torch.sin(phi) * bump,
            ],
            dim=-1,
        )
        local = torch.cat([local, local[:, parents].mean(2)], dim=1)  # split vertices: face centroids
        # Random rotation (axis-angle up to ~0.8 rad) and placement; the left hand is mirrored.
        rot = _axis_angle(0.8 * (torch.rand(batch, 3, generator=g) * 2 - 1))
        v = local @ rot.transpose(1, 2)
        v[..., 0] *= side
        offset = torch.stack(
            [
                side * 0.06 + 0.01 * torch.randn(batch, generator=g),
                0.01 * torch.randn(batch, generator=g),
                0.5 + 0.05 * torch.randn(batch, generator=g),
            ],
            dim=-1,
        )
        hands.append(v + offset[:, None])
    verts = torch.cat(hands, dim=1)
    faces_t = torch.from_numpy(faces)
    mirrored = faces_t[:, [0, 2, 1]] + V  # mirroring flips the winding; undo it
    faces_all = torch.cat([faces_t, mirrored])
    focal = torch.full((batch, 2), 1.6 * size)  # the 24 cm wide pair spans ~75% of the image at 0.5 m
    princpt = torch.full((batch, 2), (size - 1) / 2)
    return verts, faces_all, focal, princpt


def _axis_angle(aa: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle -> (B, 3, 3) rotation matrices (Rodrigues)."""
    angle = aa.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    k = aa / angle
    K = torch.zeros(aa.shape[0], 3, 3)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K = K - K.transpose(1, 2)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    return torch.eye(3) + s * K + (1 - c) * (K @ K)


def load_npz(
    path: Path, batch: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mesh from an npz with ``verts`` (V, 3) or (B, V, 3) metres camera frame and ``faces`` (F, 3),
    optionally ``focal`` / ``princpt``; without intrinsics, a camera is fitted to frame the mesh."""
    data = np.load(path)
    for key in ("verts", "faces"):
        if key not in data:
            raise UserError(f"{path} has no array {key!r} (found {sorted(data.files)})")
    verts = torch.as_tensor(data["verts"], dtype=torch.float32)
    if verts.dim() == 2:
        verts = verts[None]
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise UserError(f"{path}: verts must have shape (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    verts = verts[torch.arange(batch) % verts.shape[0]]
    faces = torch.as_tensor(data["faces"], dtype=torch.long)
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.numel() == 0:
        raise UserError(f"{path}: faces must have shape (F, 3) with F > 0, got {tuple(faces.shape)}")
    if faces.min() < 0 or faces.max() >= verts.shape[1]:
        raise UserError(
            f"{path}: faces index vertices {int(faces.min())}..{int(faces.max())}, but verts has {verts.shape[1]}"
        )
    if "focal" in data and "princpt" in data:
        focal = torch.as_tensor(data["focal"], dtype=torch.float32).reshape(-1, 2)
        princpt = torch.as_tensor(data["princpt"], dtype=torch.float32).reshape(-1, 2)
        return (
            verts,
            faces,
            focal[torch.arange(batch) % len(focal)],
            princpt[torch.arange(batch) % len(princpt)],
        )
    if (verts[..., 2] <= 0).any():
        raise UserError(
            f"{path}: verts must be in front of the camera (Z > 0) when no focal/princpt is given"
        )
    # Fit a camera: the widest normalized extent of each mesh spans 80% of the image.
    xy = verts[..., :2] / verts[..., 2:]
    lo, hi = xy.amin(1), xy.amax(1)
    f = 0.8 * size / (hi - lo).amax(-1).clamp(min=1e-6)
    focal = f[:, None].expand(batch, 2).clone()
    princpt = (size - 1) / 2 - f[:, None] * (lo + hi) / 2
    return verts, faces, focal, princpt


def _timeit(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall time in seconds of `repeats` calls after one warm-up call."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0]  # the module docstring's one-line purpose
    )
    parser.add_argument("--batch", type=int, default=64, help="meshes per batch (default: 64)")
    parser.add_argument("--size", type=int, default=256, help="square image size in pixels (default: 256)")
    parser.add_argument(
        "--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N (default: auto)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repetitions; the best is reported (default: 3)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="rasterizer candidates per chunk (default: the library's per-device default)",
    )
    parser.add_argument(
        "--mesh-npz",
        type=Path,
        default=None,
        help="npz with verts (V,3)|(B,V,3) and faces (F,3) instead of synthetic hands",
    )
    parser.add_argument(
        "--skip-baseline", action="store_true", help="do not time the one-image-at-a-time baseline"
    )
    args = parser.parse_args(argv)
    if args.chunk is not None and args.chunk < 1:
        raise UserError(f"--chunk must be positive, got {args.chunk}")
    if args.batch < 1 or args.size < 1 or args.repeats < 1:
        raise UserError(
            f"--batch, --size and --repeats must be positive, got {args.batch}, {args.size}, {args.repeats}"
        )
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {args.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda was requested but CUDA is not available")

    if args.mesh_npz is not None:
        verts, faces, focal, princpt = load_npz(args.mesh_npz, args.batch, args.size)
    else:
        verts, faces, focal, princpt = synthetic_two_hands(args.batch, args.size)
    verts, faces, focal, princpt = (t.to(device) for t in (verts, faces, focal, princpt))
    size = (args.size, args.size)
    chunk = args.chunk if args.chunk is not None else DEFAULT_CHUNK.get(device.type, DEFAULT_CHUNK["cuda"])
    kw = {"chunk": chunk}
    B = args.batch

    frags = rasterize(verts, faces, focal, princpt, size, **kw)
    coverage = frags.mask.float().mean().item()
    print(
        f"device: {device} ({torch.get_num_threads()} CPU threads)"
        if device.type == "cpu"
        else f"device: {device} ({torch.cuda.get_device_name(device)})"
    )
    print(
        f"batch {B} x {verts.shape[1]} verts / {faces.shape[0]} faces at {args.size}x{args.size}; "
        f"mean coverage {100 * coverage:.1f}% of pixels"
    )

    with torch.no_grad():
        t_rast = _timeit(lambda: rasterize(verts, faces, focal, princpt, size, **kw), args.repeats, device)
        t_full = _timeit(lambda: render_mesh(verts, faces, focal, princpt, size, **kw), args.repeats, device)
    print(f"rasterize:   {1000 * t_rast:8.1f} ms/batch  {B / t_rast:8.1f} images/s")
    print(f"render_mesh: {1000 * t_full:8.1f} ms/batch  {B / t_full:8.1f} images/s")

    # Gradient pass: render, a loss on the image, backward to the vertices.
    v = verts.clone().requires_grad_(True)
    t_grad = _timeit(
        lambda: render_mesh(v, faces, focal, princpt, size, **kw)["image"].sum().backward(),
        args.repeats,
        device,
    )
    print(f"render_mesh forward+backward: {1000 * t_grad:8.1f} ms/batch  {B / t_grad:8.1f} images/s")

    # Less-optimised variant of the z-buffer pass: every pixel of each face's bounding box is a
    # candidate (same result, see tests), against the default per-row span bounds.
    def zb(spans: bool) -> torch.Tensor:
        return _zbuffer(verts, faces, focal, princpt, args.size, args.size, 1e-3, False, chunk, spans=spans)

    with torch.no_grad():
        t_spans = _timeit(lambda: zb(True), args.repeats, device)
        t_boxes = _timeit(lambda: zb(False), args.repeats, device)
    print(
        f"z-buffer pass: row spans {1000 * t_spans:.1f} ms, whole bounding boxes {1000 * t_boxes:.1f} ms: "
        f"spans vs boxes: {t_boxes / t_spans:.2f}x"
    )

    if not args.skip_baseline:

        def per_image():
            for i in range(B):
                render_mesh(verts[i : i + 1], faces, focal[i : i + 1], princpt[i : i + 1], size, **kw)

        with torch.no_grad():
            t_loop = _timeit(per_image, args.repeats, device)
        print(f"render_mesh one image at a time: {1000 * t_loop:8.1f} ms/batch  {B / t_loop:8.1f} images/s")
        print(f"batched vs per-image: {t_loop / t_full:.2f}x")
    return 0


if __name__ == "__main__":
    run_tool(main)
