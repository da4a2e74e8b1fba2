"""Small numpy helpers on triangle-mesh connectivity."""
from __future__ import annotations

import numpy as np


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Boundary loops of a triangle mesh as ordered vertex lists (edges used by one face)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = {tuple(x) for x in e.tolist()}
    nxt = {a: b for a, b in e.tolist() if (b, a) not in key}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def vertex_normals_np(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit vertex normals, area-weighted over the incident faces."""
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for c in range(3):
        np.add.at(vn, faces[:, c], fn)
    return vn / np.linalg.norm(vn, axis=1, keepdims=True).clip(1e-12)
