"""The stand-in MANO model: real MANO's array shapes, a clean open-wrist mesh, hand-like geometry."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import smplx
import torch

from handrecon.hand_model.constants import FINGERTIP_VERTEX_IDS, MANO_PARENTS
from handrecon.hand_model.standin import build_standin_mano, write_standin_mano
from handrecon.hand_model.topology import boundary_loops


@pytest.fixture(scope="module")
def right():
    return build_standin_mano(True)


@pytest.fixture(scope="module")
def left():
    return build_standin_mano(False)


def _edges(faces):
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def test_array_shapes_match_real_mano(right):
    assert right["v_template"].shape == (778, 3)
    assert right["f"].shape == (1538, 3)
    assert right["J_regressor"].shape == (16, 778)
    assert right["weights"].shape == (778, 16)
    assert right["shapedirs"].shape == (778, 3, 10)
    assert right["posedirs"].shape == (778, 3, 135)
    assert right["hands_components"].shape == (45, 45)
    assert right["hands_mean"].shape == (45,)
    assert right["J"].shape == (16, 3)
    parents = right["kintree_table"][0].copy()
    parents[0] = -1
    assert tuple(parents) == MANO_PARENTS
    assert tuple(right["kintree_table"][1]) == tuple(range(16))


def test_smplx_loads_the_files_unchanged(mano_dir, right):
    for is_rhand in (True, False):
        layer = smplx.MANO(str(mano_dir), is_rhand=is_rhand, use_pca=False, flat_hand_mean=True)
        out = layer(global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45), betas=torch.zeros(1, 10))
        expected = build_standin_mano(is_rhand)["v_template"]
        np.testing.assert_allclose(out.vertices[0].detach().numpy(), expected, atol=1e-6)
    with open(mano_dir / "MANO_RIGHT.pkl", "rb") as fh:
        assert set(pickle.load(fh, encoding="latin1")) >= {"v_template", "f", "J_regressor", "hands_components"}


def test_deterministic():
    a, b = build_standin_mano(True), build_standin_mano(True)
    for key in ("v_template", "f", "weights", "shapedirs", "posedirs", "hands_components"):
        np.testing.assert_array_equal(a[key], b[key])


def test_single_wrist_boundary_loop_of_16(right):
    faces = right["f"].astype(np.int64)
    loops = boundary_loops(faces)
    assert [len(loop) for loop in loops] == [16]
    # it is the wrist: the loop's centre is the mesh point set's farthest from the middle tip
    v = right["v_template"]
    centre = v[loops[0]].mean(0)
    assert np.linalg.norm(centre - right["J"][0]) < 0.02
    assert np.linalg.norm(v[FINGERTIP_VERTEX_IDS[2]] - centre) > 0.17


def test_watertight_apart_from_wrist_and_consistently_oriented(right):
    faces = right["f"].astype(np.int64)
    directed = _edges(faces)
    # each directed edge at most once -> a consistently oriented 2-manifold
    assert len({tuple(e) for e in directed.tolist()}) == len(directed)
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert (counts == 1).sum() == 16
    # Euler characteristic of a disc, and of a sphere once the hole is closed by a fan
    v, e, f = 778, len(undirected), len(faces)
    assert v - e + f == 1
    loop = boundary_loops(faces)[0]
    verts = np.vstack([right["v_template"], right["v_template"][loop].mean(0)])
    fan = np.array([[loop[(i + 1) % 16], loop[i], 778] for i in range(16)])
    closed = np.vstack([faces, fan])
    tri = verts[closed]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume > 1e-4  # outward normals, and a hand-sized volume (> 100 cm^3)


def test_no_degenerate_faces(right):
    tri = right["v_template"][right["f"].astype(np.int64)]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.min() > 1e-6  # 1 mm^2
    assert len(np.unique(np.sort(right["f"], axis=1), axis=0)) == 1538


def test_hand_proportions(right):
    v, joints = right["v_template"], right["J"]
    wrist = joints[0]
    tips = v[list(FINGERTIP_VERTEX_IDS)]  # thumb, index, middle, ring, pinky
    assert 0.18 <= np.linalg.norm(tips[2] - wrist) <= 0.19
    # each digit has three segments of decreasing length, ending at its tip
    chains = {"index": (1, 2, 3), "middle": (4, 5, 6), "ring": (10, 11, 12), "pinky": (7, 8, 9), "thumb": (13, 14, 15)}
    tip_of = {"thumb": 0, "index": 1, "middle": 2, "ring": 3, "pinky": 4}
    for name, (a, b, c) in chains.items():
        seg = [np.linalg.norm(joints[b] - joints[a]), np.linalg.norm(joints[c] - joints[b]), np.linalg.norm(tips[tip_of[name]] - joints[c])]
        assert all(0.012 < s < 0.05 for s in seg), (name, seg)
        assert seg[0] > seg[1], (name, seg)
    # middle finger longest, pinky shortest
    length = {n: np.linalg.norm(tips[tip_of[n]] - joints[chains[n][0]]) for n in ("index", "middle", "ring", "pinky")}
    assert max(length, key=length.get) == "middle" and min(length, key=length.get) == "pinky"
    # palm width across the index-pinky knuckles, and thumb on the +z side for the right hand
    assert 0.05 < np.linalg.norm(joints[1] - joints[7]) < 0.09
    assert tips[0, 2] > joints[1, 2]


def test_skinning_weights_smooth_and_owned_by_the_right_joint(right):
    w = right["weights"]
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
    e = _edges(right["f"].astype(np.int64))
    assert np.abs(w[e[:, 0]] - w[e[:, 1]]).max() < 0.5  # no jumps between neighbours
    # fingertips follow the last joint of their digit; the wrist loop follows the wrist
    for tip, joint in zip(FINGERTIP_VERTEX_IDS, (15, 3, 6, 12, 9)):
        assert w[tip].argmax() == joint
    loop = boundary_loops(right["f"].astype(np.int64))[0]
    assert (w[loop].argmax(1) == 0).all()


def test_pca_basis_orthonormal(right):
    c = right["hands_components"]
    np.testing.assert_allclose(c @ c.T, np.eye(45), atol=1e-10)


def _forward(model, betas):
    layer = smplx.MANO("unused", data_struct=smplx.utils.Struct(**model), use_pca=False, flat_hand_mean=True)
    out = layer(betas=torch.tensor(betas, dtype=torch.float32)[None], global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45))
    v = out.vertices[0].detach().numpy()
    return v, model["J_regressor"] @ v


@pytest.mark.parametrize("beta", [-2.0, 2.0])
def test_shape_coefficients_change_plausible_things(right, beta):
    def measures(b):
        v, j = _forward(right, b)
        return {
            "length": np.linalg.norm(v[FINGERTIP_VERTEX_IDS[2]] - j[0]),
            "finger": np.linalg.norm(v[FINGERTIP_VERTEX_IDS[2]] - j[4]),
            "palm_width": np.linalg.norm(j[1] - j[7]),
            "thickness": np.ptp(v[:, 1]),
        }

    base = measures(np.zeros(10))

    def with_(k):
        b = np.zeros(10)
        b[k] = beta
        return measures(b)

    sign = np.sign(beta)
    size, finger, width, thick = with_(0), with_(1), with_(2), with_(3)
    assert sign * (size["length"] - base["length"]) > 0.01  # overall size: +-1 cm per 2 sigma
    assert sign * (finger["finger"] - base["finger"]) > 0.005  # finger length
    assert abs(finger["palm_width"] - base["palm_width"]) < 1e-4
    assert sign * (width["palm_width"] - base["palm_width"]) > 0.005  # palm width
    assert abs(width["finger"] - base["finger"]) < 1e-3
    assert sign * (thick["thickness"] - base["thickness"]) > 0.003  # thickness
    assert abs(thick["length"] - base["length"]) < 2e-3


def test_left_is_mirror_of_right(right, left):
    mirror = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(left["v_template"], right["v_template"] * mirror)
    np.testing.assert_allclose(left["shapedirs"], right["shapedirs"] * mirror[None, :, None])
    np.testing.assert_array_equal(left["f"], right["f"][:, ::-1])
    np.testing.assert_array_equal(left["weights"], right["weights"])


def test_write_is_idempotent(tmp_path):
    r1, l1 = write_standin_mano(tmp_path)
    stamp = r1.stat().st_mtime_ns
    r2, _ = write_standin_mano(tmp_path)
    assert r2 == r1 and r1.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.tmp"))


def test_joint_regressor_spreads_over_its_own_digit(right):
    jreg = right["J_regressor"].toarray()
    np.testing.assert_allclose(jreg.sum(1), 1.0, atol=1e-9)
    assert (jreg >= 0).all()
    # >= 10 effective vertices per joint (sum of squared weights <= 0.1), so a regressed joint is steady
    assert (jreg**2).sum(1).max() <= 0.1
    # a finger joint never draws on another digit: its vertices are skinned to the same digit
    digit_of_joint = {j: d for d, js in enumerate(((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12), (13, 14, 15))) for j in js}
    owner = right["weights"].argmax(1)
    for j in range(1, 13):
        used = np.flatnonzero(jreg[j] > 0)
        digits = {digit_of_joint.get(int(o), -1) for o in owner[used]}
        assert digits <= {digit_of_joint[j], -1}, (j, digits)
