"""A procedural stand-in for the MANO hand model, written in MANO's own pickle format.

The licensed MANO files cannot ship with the toolkit, so tests and the quickstart use this
model instead. It has every array real MANO has, with the same shapes (778 vertices, 1538
faces, an open wrist of 16 boundary vertices, 16 joints in MANO's kinematic tree, 10 shape and
135 pose-corrective blend shapes, 45x45 PCA components and a hand mean), and it is loaded
through the same `smplx.MANO` path as the real files.

Construction, in short:
1. The hand is a union of lattice voxels (wrist stub, palm, four fingers, a thumb on the
   radial side). The voxel boundary is a closed quad mesh of genus 0; removing the wrist-end
   quads opens a hole whose boundary is one loop of 16 vertices. The lattice sizes are chosen
   so that exactly 778 vertices remain (then 1538 triangles follow from Euler's formula).
2. Every lattice vertex is placed by a per-part map (palm, finger, thumb, wrist tube) with real
   proportions in metres, rounded cross-sections and domed fingertips, then Taubin-smoothed.
3. Skinning weights, joint regressor, blend shapes and PCA basis come from the same per-part
   parametrisation (which finger, how far along it), so they are smooth and meaningful.

Frame (as in MANO's right hand): fingers point to -x, the back of the hand faces +y, the thumb
is on the +z side; metres. The left model is the exact mirror (x -> -x) of the right one.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import nnls

from ..io import atomic_write_bytes
from .constants import FINGERTIP_VERTEX_IDS, MANO_PARENTS, NUM_FACES, NUM_VERTS
from .topology import boundary_loops, vertex_normals_np

# ---------------------------------------------------------------------------------------------
# Lattice layout. Axes: i lateral (towards the thumb), j along the fingers, k dorsal.
# ---------------------------------------------------------------------------------------------
_WRIST_ROWS = 2  # j in [0, 2): wrist stub, open at j = 0
_PALM_ROWS = 4  # j in [2, 6)
_PALM_TOP = _WRIST_ROWS + _PALM_ROWS
_THICK = 4  # k in [0, 4) for palm and fingers
_WRIST_I = (3, 8)  # wrist stub lateral range (5 cells)
_WRIST_K = (0, 3)  # wrist stub dorsal range (3 cells): boundary loop = 2 * (5 + 3) = 16
_THUMB_ROWS_J = (_WRIST_ROWS, _WRIST_ROWS + 3)  # thumb base on the palm's radial side

# Fingers on the lattice, ulnar to radial. Each: (name, lattice column start, rows, PIP row,
# DIP row, MANO joint ids (MCP, PIP, DIP), segment lengths MCP->PIP, PIP->DIP, DIP->tip in m,
# base half-width, tip half-width, splay angle in rad, MCP line height in m).
@dataclass(frozen=True)
class _Digit:
    name: str
    col: int
    rows: int
    r1: int
    r2: int
    joints: tuple[int, int, int]
    lengths: tuple[float, float, float]
    radius: tuple[float, float]
    splay: float
    base_v: float


_FINGERS = (
    _Digit("pinky", 0, 8, 3, 6, (7, 8, 9), (0.031, 0.019, 0.019), (0.0080, 0.0064), -0.20, 0.082),
    _Digit("ring", 3, 9, 4, 7, (10, 11, 12), (0.040, 0.026, 0.021), (0.0088, 0.0068), -0.08, 0.091),
    _Digit("middle", 6, 10, 4, 7, (4, 5, 6), (0.042, 0.027, 0.022), (0.0092, 0.0071), 0.0, 0.095),
    _Digit("index", 9, 9, 4, 7, (1, 2, 3), (0.039, 0.024, 0.020), (0.0090, 0.0070), 0.09, 0.092),
)
# The thumb grows along +i from the palm's radial side; its "rows" run along i.
_THUMB = _Digit("thumb", 11, 8, 3, 6, (13, 14, 15), (0.026, 0.031, 0.026), (0.0115, 0.0088), 0.0, 0.0)
_FINGER_COLS = 2
_GAP = 1
_PALM_COLS = 4 * _FINGER_COLS + 3 * _GAP  # 11

# Metric layout of the design frame (u lateral, v along fingers, w dorsal), metres.
_FINGER_CELL = {"pinky": 0.0075, "ring": 0.0085, "middle": 0.0090, "index": 0.0088}
_GAP_CELL = 0.0045
_WRIST_V = (-0.012, 0.0)  # v of lattice rows j = 0, 1 (the wrist joint sits at v = 0)
_PALM_BOTTOM_V = 0.014
_PALM_HALF_THICK = (0.0150, 0.0120)  # at the heel, at the knuckles
_WRIST_HALF = (0.0275, 0.0155)  # wrist tube half-width, half-thickness
_THUMB_DIR = (0.72, 0.52, -0.45)  # thumb axis in (u, v, w): out, towards the fingers, palmar
_X_WRIST = 0.09  # MANO frame: x = _X_WRIST - v, y = w, z = u


def _lateral_edges() -> np.ndarray:
    """u of the 12 lattice lines i = 0..11 across the palm, centred on 0."""
    widths = []
    for f, digit in enumerate(_FINGERS):
        widths += [_FINGER_CELL[digit.name]] * _FINGER_COLS
        if f < 3:
            widths += [_GAP_CELL] * _GAP
    edges = np.concatenate([[0.0], np.cumsum(widths)])
    return edges - edges[-1] / 2


# ---------------------------------------------------------------------------------------------
# Topology: voxel union -> quad surface -> triangles.
# ---------------------------------------------------------------------------------------------
def _voxels() -> set[tuple[int, int, int]]:
    vox = set()
    for j in range(_WRIST_ROWS):
        for i in range(*_WRIST_I):
            for k in range(*_WRIST_K):
                vox.add((i, j, k))
    for j in range(_WRIST_ROWS, _PALM_TOP):
        for i in range(_PALM_COLS):
            for k in range(_THICK):
                vox.add((i, j, k))
    for d in _FINGERS:
        for j in range(_PALM_TOP, _PALM_TOP + d.rows):
            for i in range(d.col, d.col + _FINGER_COLS):
                for k in range(_THICK):
                    vox.add((i, j, k))
    for i in range(_PALM_COLS, _PALM_COLS + _THUMB.rows):
        for j in range(*_THUMB_ROWS_J):
            for k in range(_THICK):
                vox.add((i, j, k))
    return vox


def _quad_surface(vox: set) -> tuple[np.ndarray, np.ndarray]:
    """Exposed voxel faces as counter-clockwise (seen from outside) quads of lattice corners."""
    corners: dict[tuple[int, int, int], int] = {}
    quads = []
    for cell in sorted(vox):
        for axis in range(3):
            for sign in (1, -1):
                nb = list(cell)
                nb[axis] += sign
                if tuple(nb) in vox:
                    continue
                if axis == 1 and sign == -1 and cell[1] == 0:
                    continue  # the open wrist end
                a, b = (axis + 1) % 3, (axis + 2) % 3
                base = list(cell)
                if sign > 0:
                    base[axis] += 1
                loop = [(0, 0), (1, 0), (1, 1), (0, 1)]
                if sign < 0:
                    loop = loop[::-1]
                ids = []
                for da, db in loop:
                    c = list(base)
                    c[a] += da
                    c[b] += db
                    ids.append(corners.setdefault(tuple(c), len(corners)))
                quads.append(ids)
    lattice = np.array(sorted(corners, key=corners.get), dtype=np.int64)
    return lattice, np.array(quads, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Geometry: per-part maps from lattice corners to the design frame (u, v, w).
# ---------------------------------------------------------------------------------------------
def _squircle(a: np.ndarray, b: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    """Map the square [-1, 1]^2 onto the superellipse |a|^n + |b|^n <= 1, radially."""
    inf = np.maximum(np.abs(a), np.abs(b))
    pn = (np.abs(a) ** n + np.abs(b) ** n) ** (1.0 / n)
    scale = np.where(pn > 1e-12, inf / np.maximum(pn, 1e-12), 1.0)
    return a * scale, b * scale


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class _Parts:
    """Per-vertex parametrisation shared by geometry, skinning and blend shapes."""

    digit: np.ndarray  # -1 palm/wrist, 0..3 fingers (ulnar to radial), 4 thumb
    t: np.ndarray  # lattice row along the digit (0 at its base), or along the palm for -1
    center: np.ndarray  # (V,3) axis point of the vertex's cross-section
    axis: np.ndarray  # (V,3) unit axis direction
    s: np.ndarray  # metric distance along the digit from its base (0 on the palm)


def _digit_frame(d: _Digit, u_edges: np.ndarray):
    """Base centre, axis, lateral and dorsal unit vectors of a finger, design frame."""
    u_c = (u_edges[d.col] + u_edges[d.col + _FINGER_COLS]) / 2
    axis = np.array([np.sin(d.splay), np.cos(d.splay), 0.0])
    lateral = np.array([np.cos(d.splay), -np.sin(d.splay), 0.0])
    return np.array([u_c, d.base_v, 0.0]), axis, lateral, np.array([0.0, 0.0, 1.0])


def _row_positions(d: _Digit) -> np.ndarray:
    """Metric position of each ring r = 0..rows along a digit: joints at rows r1 and r2."""
    l1, l2, l3 = d.lengths
    tip_round = d.radius[1] * 0.8
    seg = [(0, d.r1, 0.0, l1), (d.r1, d.r2, l1, l1 + l2), (d.r2, d.rows, l1 + l2, l1 + l2 + l3 - tip_round)]
    s = np.zeros(d.rows + 1)
    for r0, r1, s0, s1 in seg:
        s[r0 : r1 + 1] = np.linspace(s0, s1, r1 - r0 + 1)
    return s


def _palm_top_v(u: np.ndarray, u_edges: np.ndarray) -> np.ndarray:
    """Height of the knuckle line at lateral position u (highest at the middle finger)."""
    centres = [(u_edges[d.col] + u_edges[d.col + 2]) / 2 for d in _FINGERS]
    return np.interp(u, centres, [d.base_v for d in _FINGERS])


def _place(lattice: np.ndarray) -> tuple[np.ndarray, _Parts]:
    u_edges = _lateral_edges()
    half_w_top = u_edges[-1]
    n = len(lattice)
    pos = np.zeros((n, 3))
    digit = np.full(n, -1)
    t = np.zeros(n)
    center = np.zeros((n, 3))
    axis = np.tile([0.0, 1.0, 0.0], (n, 1))
    s = np.zeros(n)
    i, j, k = lattice.T.astype(float)

    # Palm (and the wrist junction / heel faces): rows j in [2, 6], all of the palm lattice.
    palm = (lattice[:, 1] >= _WRIST_ROWS) & (lattice[:, 1] <= _PALM_TOP) & (lattice[:, 0] <= _PALM_COLS)
    ip = np.clip(i[palm], 0, _PALM_COLS).astype(int)
    u = u_edges[ip]
    frac = (j[palm] - _WRIST_ROWS) / _PALM_ROWS
    a, b = _squircle(u / half_w_top, (k[palm] - _THICK / 2) / (_THICK / 2), 4.0)
    width_scale = 0.86 + 0.14 * _smoothstep(frac * 1.6)  # narrower heel
    v = _PALM_BOTTOM_V + (_palm_top_v(a * half_w_top, u_edges) - _PALM_BOTTOM_V) * frac
    half_t = np.interp(frac, [0, 1], _PALM_HALF_THICK) * (1 - 0.35 * a**2)
    pos[palm] = np.stack([a * half_w_top * width_scale, v, b * half_t], 1)
    t[palm] = frac * _PALM_ROWS
    center[palm] = np.stack([np.zeros_like(v), v, np.zeros_like(v)], 1)

    # Wrist tube: rows j = 0, 1 (j = 2 belongs to the palm's heel face).
    wrist = lattice[:, 1] < _WRIST_ROWS
    i0, i1 = _WRIST_I
    k0, k1 = _WRIST_K
    a = (i[wrist] - (i0 + i1) / 2) / ((i1 - i0) / 2)
    b = (k[wrist] - (k0 + k1) / 2) / ((k1 - k0) / 2)
    a, b = _squircle(a, b, 2.5)
    v = np.array(_WRIST_V)[lattice[wrist, 1]]
    pos[wrist] = np.stack([a * _WRIST_HALF[0], v, b * _WRIST_HALF[1]], 1)
    t[wrist] = j[wrist] - _WRIST_ROWS
    center[wrist] = np.stack([np.zeros_like(v), v, np.zeros_like(v)], 1)

    # Fingers: rows above the palm top.
    for f, d in enumerate(_FINGERS):
        sel = (lattice[:, 1] > _PALM_TOP) & (lattice[:, 0] >= d.col) & (lattice[:, 0] <= d.col + _FINGER_COLS)
        base, ax, lat, dor = _digit_frame(d, u_edges)
        r = lattice[sel, 1] - _PALM_TOP
        a = (i[sel] - d.col - 1.0) / 1.0
        b = (k[sel] - _THICK / 2) / (_THICK / 2)
        _place_digit(pos, sel, r, a, b, d, base, ax, lat, dor)
        on_base = (lattice[:, 1] == _PALM_TOP) & (lattice[:, 0] >= d.col) & (lattice[:, 0] <= d.col + 2)
        for m, rr in ((sel, r), (on_base, np.zeros(on_base.sum()))):
            digit[m] = f
            t[m] = rr
            s[m] = _row_positions(d)[rr.astype(int)]
            center[m] = base + s[m][:, None] * ax
            axis[m] = ax

    # Thumb: along +i from the palm's radial side.
    d = _THUMB
    sel = lattice[:, 0] > _PALM_COLS
    on_base = lattice[:, 0] == _PALM_COLS
    on_base &= (lattice[:, 1] >= _THUMB_ROWS_J[0]) & (lattice[:, 1] <= _THUMB_ROWS_J[1])
    base = pos[on_base].mean(0)
    ax = np.array(_THUMB_DIR) / np.linalg.norm(_THUMB_DIR)
    lat = np.array([0.0, 1.0, 0.0]) - ax[1] * ax  # lattice j direction, made orthogonal
    lat /= np.linalg.norm(lat)
    dor = np.cross(ax, lat)
    dor *= np.sign(dor[2])
    r = lattice[sel, 0] - _PALM_COLS
    jc = sum(_THUMB_ROWS_J) / 2
    a = (j[sel] - jc) / ((_THUMB_ROWS_J[1] - _THUMB_ROWS_J[0]) / 2)
    b = (k[sel] - _THICK / 2) / (_THICK / 2)
    _place_digit(pos, sel, r, a, b, d, base, ax, lat, dor)
    for m, rr in ((sel, r), (on_base, np.zeros(on_base.sum()))):
        digit[m] = 4
        t[m] = rr
        s[m] = _row_positions(d)[rr.astype(int)]
        center[m] = base + s[m][:, None] * ax
        axis[m] = ax
    return pos, _Parts(digit, t, center, axis, s)


def _place_digit(pos, sel, r, a, b, d: _Digit, base, ax, lat, dor) -> None:
    """Rings of a digit: round cross-sections tapering to a domed tip."""
    s_rows = _row_positions(d)
    frac = r / d.rows
    rad = d.radius[0] + (d.radius[1] - d.radius[0]) * frac
    a, b = _squircle(a, b, 2.0)
    s = s_rows[r]
    tip = r == d.rows  # the cap: dome its interior outwards
    dome = np.where(tip, d.radius[1] * 0.8 * np.sqrt(np.clip(1 - a**2 - b**2, 0, 1)), 0.0)
    pos[sel] = base + (s + dome)[:, None] * ax + (a * rad)[:, None] * lat + (b * rad * 0.92)[:, None] * dor


# ---------------------------------------------------------------------------------------------
# Mesh utilities (numpy; the toolkit's torch code lives elsewhere).
# ---------------------------------------------------------------------------------------------
def _neighbours(n: int, faces: np.ndarray) -> sparse.csr_matrix:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    adj = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    adj.data[:] = 1.0
    return adj


def _taubin(verts: np.ndarray, adj: sparse.csr_matrix, fixed: np.ndarray, iters: int) -> np.ndarray:
    deg = np.asarray(adj.sum(1)).ravel()
    v = verts.copy()
    for _ in range(iters):
        for lam in (0.5, -0.53):
            lap = adj @ v / deg[:, None] - v
            v[~fixed] += lam * lap[~fixed]
    return v


def _diffuse(values: np.ndarray, adj: sparse.csr_matrix, iters: int, rate: float = 0.5) -> np.ndarray:
    deg = np.asarray(adj.sum(1)).ravel()
    x = values.copy()
    for _ in range(iters):
        x = (1 - rate) * x + rate * (adj @ x) / deg[:, None]
    return x


def _convex_regressor(verts: np.ndarray, target: np.ndarray, allowed: np.ndarray, k: int = 24, reg: float = 1e-2) -> np.ndarray:
    """Non-negative weights summing to one over the k `allowed` vertices nearest `target`, whose
    weighted mean is as close to `target` as possible, spread as evenly as that allows (a joint
    regressed from many vertices is as steady as MANO's)."""
    cand = np.flatnonzero(allowed)
    idx = cand[np.argsort(np.linalg.norm(verts[cand] - target, axis=1))[:k]]
    big = 1e3
    a = np.concatenate([big * verts[idx].T, big * np.ones((1, k)), np.sqrt(reg) * np.eye(k)])
    b = np.concatenate([big * target, [big], np.full(k, np.sqrt(reg) / k)])
    w, _ = nnls(a, b)
    row = np.zeros(len(verts))
    row[idx] = w / w.sum()
    return row


# ---------------------------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------------------------
def _to_mano_frame(x: np.ndarray, is_vector: bool = False) -> np.ndarray:
    """Design (u, v, w) -> MANO right-hand frame (x = x_wrist - v, y = w, z = u)."""
    out = np.stack([-x[..., 1], x[..., 2], x[..., 0]], -1)
    if not is_vector:
        out[..., 0] += _X_WRIST
    return out


def _permutation_for_tips(n: int, tip_now: list[int]) -> np.ndarray:
    """A vertex order in which the current tip vertices land at FINGERTIP_VERTEX_IDS."""
    order = [v for v in range(n) if v not in set(tip_now)]
    for slot, v in sorted(zip(FINGERTIP_VERTEX_IDS, tip_now)):
        order.insert(slot, v)
    return np.array(order)  # new index -> old index


def build_standin_mano(is_rhand: bool = True) -> dict:
    """Build the stand-in model as a dict with the keys and shapes of an official MANO pkl.

    Deterministic: the same arrays every call. The left model mirrors the right one.
    """
    lattice, quads = _quad_surface(_voxels())
    pos, parts = _place(lattice)

    # Triangulate each quad along its shorter diagonal.
    p = pos[quads]
    short02 = np.linalg.norm(p[:, 0] - p[:, 2], axis=1) <= np.linalg.norm(p[:, 1] - p[:, 3], axis=1)
    faces = np.where(
        short02[:, None, None],
        np.stack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], 1),
        np.stack([quads[:, [0, 1, 3]], quads[:, [1, 2, 3]]], 1),
    ).reshape(-1, 3)
    n = len(pos)
    if n != NUM_VERTS or len(faces) != NUM_FACES:
        raise AssertionError(f"stand-in layout gives {n} vertices / {len(faces)} faces")

    adj = _neighbours(n, faces)
    (loop,) = boundary_loops(faces)
    fixed = np.zeros(n, bool)
    fixed[loop] = True
    verts = _taubin(pos, adj, fixed, iters=8)

    # Tip apexes: the centre of each digit's cap.
    tips = []
    for d, f in ((_THUMB, 4), (_FINGERS[3], 3), (_FINGERS[2], 2), (_FINGERS[1], 1), (_FINGERS[0], 0)):
        cand = np.where((parts.digit == f) & (parts.t == d.rows))[0]
        far = cand[np.argmax((verts[cand] - parts.center[cand]) @ parts.axis[cand[0]])]
        tips.append(int(far))

    # --- skinning weights: by digit and row, blended across joint rows, then diffused.
    weights = np.zeros((n, 16))
    palm_like = parts.digit == -1
    weights[palm_like, 0] = 1.0
    for f, d in enumerate(_FINGERS + (_THUMB,)):
        m = parts.digit == f
        tt = parts.t[m]
        # smooth steps at the digit's base and its two inner joint rows; the wrist keeps
        # what the first step leaves, each segment owns the band between its steps
        h = 0.6
        step = [_smoothstep((tt - b + h) / (2 * h)) for b in (0.0, d.r1, d.r2)] + [np.zeros_like(tt)]
        weights[m, 0] = 1 - step[0]
        for seg, jid in enumerate(d.joints):
            weights[m, jid] = step[seg] - step[seg + 1]
    weights = _diffuse(weights, adj, iters=3)
    weights = np.clip(weights, 0, None)
    weights /= weights.sum(1, keepdims=True)

    # --- joints: wrist at the wrist-tube centre, digit joints at ring centres; CMC inside the palm.
    targets = np.zeros((16, 3))
    targets[0] = [0.0, 0.0, 0.0]
    u_edges = _lateral_edges()
    for d in _FINGERS:
        base, ax, _, _ = _digit_frame(d, u_edges)
        rows = _row_positions(d)
        for jid, r in zip(d.joints, (0, d.r1, d.r2)):
            targets[jid] = base + rows[r] * ax
    thumb_base = parts.center[(parts.digit == 4) & (parts.t == 0)][0]
    targets[13] = thumb_base + np.array([-0.022, -0.012, -0.004])
    rows = _row_positions(_THUMB)
    targets[14] = thumb_base + rows[_THUMB.r1] * parts.axis[parts.digit == 4][0]
    targets[15] = thumb_base + rows[_THUMB.r2] * parts.axis[parts.digit == 4][0]
    # each joint draws on its own digit only (the wrist on the palm, the thumb's base also on it)
    owner = np.full(16, -1)
    for f, d in enumerate(_FINGERS + (_THUMB,)):
        owner[list(d.joints)] = f
    allowed = [parts.digit == owner[j] for j in range(16)]
    allowed[13] = allowed[13] | (parts.digit == -1)
    j_reg = np.stack([_convex_regressor(verts, t_, ok) for t_, ok in zip(targets, allowed)])

    # --- shape blend shapes (design frame), each a displacement per unit coefficient.
    normals = vertex_normals_np(verts, faces)
    digit_base = np.zeros((n, 3))
    for f in range(5):
        m = parts.digit == f
        digit_base[m] = (parts.center[m] - parts.s[m][:, None] * parts.axis[m])
    on_digit = (parts.digit >= 0).astype(float)[:, None]
    radial = verts - parts.center
    radial -= (radial * parts.axis).sum(1, keepdims=True) * parts.axis
    along = parts.s[:, None] * parts.axis
    wrist_pt = targets[0]
    anchor = np.where(on_digit > 0, digit_base, verts)  # what the palm-level shapes move
    e_u, e_v, e_w = np.eye(3)

    def only(f):
        return (parts.digit == f).astype(float)[:, None]

    shapedirs = np.stack(
        [
            0.05 * (verts - wrist_pt),  # 0 overall size
            0.06 * along * on_digit,  # 1 digit length
            0.07 * (anchor @ e_u)[:, None] * e_u,  # 2 palm width (digits move with their base)
            0.10 * (radial @ e_w)[:, None] * e_w,  # 3 thickness
            0.06 * np.clip(anchor @ e_v, 0, None)[:, None] * e_v,  # 4 palm length
            0.08 * radial * on_digit,  # 5 digit girth
            0.08 * along * only(4),  # 6 thumb length
            0.05 * along * (only(3) - only(1)),  # 7 index/ring length ratio
            0.08 * along * only(0),  # 8 little finger length
            0.0015 * normals,  # 9 soft-tissue volume
        ],
        axis=-1,
    )  # (V, 3, 10)

    # --- pose correctives: knuckles bulge outwards as a joint bends (2(1 - cos theta) gain).
    posedirs = np.zeros((n, 3, 135))
    parents = np.array(MANO_PARENTS)
    for jid in range(1, 16):
        bump = 4 * weights[:, jid] * weights[:, parents[jid]]
        for diag in (0, 4, 8):
            posedirs[:, :, (jid - 1) * 9 + diag] = -0.0015 * bump[:, None] * normals
    v_template = verts

    # --- everything to the MANO frame (right hand).
    v_template = _to_mano_frame(v_template)
    shapedirs = np.moveaxis(_to_mano_frame(np.moveaxis(shapedirs, 1, -1), is_vector=True), -1, 1)
    posedirs = np.moveaxis(_to_mano_frame(np.moveaxis(posedirs, 1, -1), is_vector=True), -1, 1)
    # The design frame is left-handed relative to MANO's: flip winding to keep normals outwards.
    faces = faces[:, ::-1]

    components, mean = _pose_space(v_template, j_reg)

    # Fingertip apexes go to the ids InterWild uses for real MANO.
    order = _permutation_for_tips(n, tips)
    inv = np.argsort(order)
    model = {
        "v_template": v_template[order],
        "f": inv[faces].astype(np.uint32),
        "J_regressor": sparse.csc_matrix(j_reg[:, order]),
        "weights": weights[order],
        "shapedirs": shapedirs[order],
        "posedirs": posedirs[order],
        "kintree_table": np.array([[4294967295] + list(MANO_PARENTS[1:]), list(range(16))], dtype=np.int64),
        "hands_components": components,
        "hands_mean": mean,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    model["J"] = model["J_regressor"] @ model["v_template"]
    model = {k: (np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v) for k, v in model.items()}
    return model if is_rhand else mirror_mano(model)


def _flex_axes(v_template: np.ndarray, j_reg: np.ndarray) -> np.ndarray:
    """Per finger joint (15), the unit axis that curls the digit towards the palm."""
    joints = j_reg @ v_template
    palm_normal = np.array([0.0, 1.0, 0.0])  # back of the hand
    axes = np.zeros((15, 3))
    for jid in range(1, 16):
        # bone direction: towards the child joint, or from the parent for the last joint
        d = joints[jid + 1] - joints[jid] if jid % 3 else joints[jid] - joints[jid - 1]
        d /= np.linalg.norm(d)
        a = np.cross(palm_normal, d)
        axes[jid - 1] = a / np.linalg.norm(a)
    return axes


def _pose_space(v_template: np.ndarray, j_reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An orthonormal 45x45 PCA basis led by hand synergies, and a relaxed mean pose."""
    flex = _flex_axes(v_template, j_reg)
    palm_normal = np.array([0.0, 1.0, 0.0])
    # joints 1..15 as (digit, level): index 1-3, middle 4-6, pinky 7-9, ring 10-12, thumb 13-15
    digit_of = {1: "index", 4: "middle", 7: "pinky", 10: "ring", 13: "thumb"}
    rows = {name: [base + lvl for lvl in range(3)] for base, name in digit_of.items()}

    def vec(spec: dict[int, np.ndarray]) -> np.ndarray:
        out = np.zeros(45)
        for jid, aa in spec.items():
            out[3 * (jid - 1) : 3 * jid] = aa
        return out

    fingers = ("index", "middle", "ring", "pinky")
    spread_sign = {"index": 1.0, "middle": 0.2, "ring": -0.6, "pinky": -1.0}
    thumb_axis = np.array([-1.0, 0.0, 0.0])  # roll the thumb across the palm
    synergies = [
        vec({j: flex[j - 1] for f in fingers for j in rows[f]} | {j: 0.5 * flex[j - 1] for j in rows["thumb"]}),  # close
        vec({rows[f][0]: spread_sign[f] * palm_normal for f in fingers}),  # spread
        vec({rows["thumb"][0]: thumb_axis, rows["thumb"][1]: 0.5 * flex[13]}),  # opposition
        vec({j: flex[j - 1] * (-1 if lvl == 0 else 1) for f in fingers for lvl, j in enumerate(rows[f])}),  # claw
        vec({j: flex[j - 1] * (-1 if f == "index" else 1) for f in fingers for j in rows[f]}),  # point
        vec({j: flex[j - 1] * (1 if f in ("ring", "pinky") else -1) for f in fingers for j in rows[f]}),  # ulnar vs radial
    ]
    per_joint_flex = [vec({j: flex[j - 1]}) for j in range(1, 16)]
    components = []  # Gram-Schmidt in this order, skipping dependent candidates
    for cand in [*synergies, *per_joint_flex, *np.eye(45)]:
        for c in components:
            cand = cand - (cand @ c) * c
        if np.linalg.norm(cand) > 1e-6:
            components.append(cand / np.linalg.norm(cand))
    components = np.array(components[:45])
    mean = vec(
        {j: flex[j - 1] * (0.15 + 0.1 * lvl + 0.05 * fi) for fi, f in enumerate(fingers) for lvl, j in enumerate(rows[f])}
        | {rows["thumb"][0]: 0.15 * thumb_axis, rows["thumb"][1]: 0.1 * flex[13], rows["thumb"][2]: 0.1 * flex[14]}
    )
    return np.ascontiguousarray(components), mean


_MIRROR = np.array([-1.0, 1.0, 1.0])


def mirror_mano(model: dict) -> dict:
    """The mirror image (x -> -x) of a MANO model dict: a right model becomes a left one.

    Poses mirror as axis-angle (a, b, c) -> (a, -b, -c), so the hand PCA basis and mean flip
    those components, and a pose corrective on feature (R - I)_ij gains the sign s_i s_j.
    """
    s = _MIRROR
    out = dict(model)
    out["v_template"] = model["v_template"] * s
    out["J"] = model["J"] * s
    out["f"] = model["f"][:, ::-1].copy()
    out["shapedirs"] = model["shapedirs"] * s[None, :, None]
    feat_sign = np.tile(np.outer(s, s).ravel(), 15)
    out["posedirs"] = model["posedirs"] * s[None, :, None] * feat_sign[None, None, :]
    aa_sign = np.tile([1.0, -1.0, -1.0], 15)
    out["hands_components"] = model["hands_components"] * aa_sign[None, :]
    out["hands_mean"] = model["hands_mean"] * aa_sign
    return {k: (np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v) for k, v in out.items()}


def write_standin_mano(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write MANO_RIGHT.pkl and MANO_LEFT.pkl (stand-in) into `out_dir`, atomically.

    Returns the two paths. Files that already exist with identical content are left alone.
    """
    out = Path(out_dir)
    paths = []
    for side, is_r in (("RIGHT", True), ("LEFT", False)):
        path = out / f"MANO_{side}.pkl"
        data = pickle.dumps(build_standin_mano(is_r), protocol=4)
        if not (path.exists() and path.read_bytes() == data):
            atomic_write_bytes(path, data)
        paths.append(path)
    return paths[0], paths[1]
