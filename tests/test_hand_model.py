"""HandModel: equals smplx, equals a naive LBS, pose formats agree, mirror and rigid motion hold."""
from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import smplx
import torch

from handrecon.hand_model.constants import (
    FINGERTIP_VERTEX_IDS,
    IH26M_JOINT_NAMES,
    IH26M_TO_OURS,
    JOINT_NAMES,
    MANO_PARENTS,
    OURS_TO_IH26M,
)
from handrecon.hand_model.mano import HandModel, MANOFileError, load_mano_file
from handrecon.hand_model.rotation import axis_angle_to_matrix, matrix_to_rot6d
from handrecon.hand_model.standin import build_standin_mano, write_standin_mano

MIRROR = torch.tensor([-1.0, 1.0, 1.0])


def _params(batch, gen, scale=0.4):
    return dict(
        betas=torch.randn(batch, 10, generator=gen),
        global_orient=torch.randn(batch, 3, generator=gen) * scale * 2,
        hand_pose=torch.randn(batch, 45, generator=gen) * scale,
        transl=torch.randn(batch, 3, generator=gen) * 0.1,
    )


def test_equals_direct_smplx_forward(mano_dir, hand_model, rng):
    p = _params(4, rng)
    for side in ("right", "left"):
        ref = smplx.MANO(str(mano_dir), is_rhand=side == "right", use_pca=False, flat_hand_mean=False)
        out_ref = ref(**p)
        out = hand_model.hand(side, **p)
        torch.testing.assert_close(out.vertices, out_ref.vertices, rtol=0, atol=1e-6)
        # the 21 joints: MANO's regressed joints in InterWild order, plus fingertip vertices
        j16 = ref.J_regressor @ out_ref.vertices
        names16 = ("wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2", "pinky3", "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3")
        for i, name in enumerate(names16):
            torch.testing.assert_close(out.joints[:, JOINT_NAMES.index(name)], j16[:, i], rtol=0, atol=1e-6)
        for finger, vid in zip(("thumb", "index", "middle", "ring", "pinky"), FINGERTIP_VERTEX_IDS):
            torch.testing.assert_close(out.joints[:, JOINT_NAMES.index(f"{finger}4")], out_ref.vertices[:, vid], rtol=0, atol=1e-6)


def _naive_lbs(model: dict, betas, full_pose_aa):
    """Linear blend skinning written out per joint and per vertex (float64)."""
    v_shaped = model["v_template"] + np.einsum("vdk,k->vd", model["shapedirs"][:, :, :10], betas)
    jreg = model["J_regressor"].toarray() if hasattr(model["J_regressor"], "toarray") else model["J_regressor"]
    joints = jreg @ v_shaped
    rots = [axis_angle_to_matrix(torch.tensor(a, dtype=torch.float64)).numpy() for a in full_pose_aa.reshape(16, 3)]
    feats = np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
    v_posed = v_shaped + np.einsum("vdk,k->vd", model["posedirs"], feats)
    world = []
    for j in range(16):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[MANO_PARENTS[j]] if j else 0)
        world.append(local if j == 0 else world[MANO_PARENTS[j]] @ local)
    out = np.zeros_like(v_posed)
    for v in range(len(v_posed)):
        blend = np.zeros((4, 4))
        for j in range(16):
            rest = np.eye(4)
            rest[:3, 3] = -joints[j]
            blend += model["weights"][v, j] * (world[j] @ rest)
        out[v] = (blend @ np.append(v_posed[v], 1.0))[:3]
    return out


def test_lbs_equals_naive_reference(hand_model, rng):
    model = build_standin_mano(True)
    p = _params(1, rng, scale=0.6)
    p.pop("transl")
    out = hand_model.hand("right", **p).vertices[0].double().numpy()
    full = torch.cat([p["global_orient"], p["hand_pose"]], 1)[0].double().numpy()
    full[3:] += model["hands_mean"]  # flat_hand_mean=False: poses are relative to the mean
    ref = _naive_lbs(model, p["betas"][0].double().numpy(), full)
    np.testing.assert_allclose(out, ref, atol=2e-6)


def test_pose_formats_agree(hand_model, rng):
    p = _params(3, rng)
    ref = hand_model.hand("right", **p).vertices
    go_m = axis_angle_to_matrix(p["global_orient"])
    hp_m = axis_angle_to_matrix(p["hand_pose"].reshape(3, 15, 3))
    common = dict(betas=p["betas"], transl=p["transl"])
    as_matrix = hand_model.hand("right", global_orient=go_m, hand_pose=hp_m, pose_format="matrix", **common).vertices
    as_6d = hand_model.hand("right", global_orient=matrix_to_rot6d(go_m), hand_pose=matrix_to_rot6d(hp_m), pose_format="rot6d", **common).vertices
    torch.testing.assert_close(as_matrix, ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(as_6d, ref, rtol=0, atol=2e-5)
    # PCA: coefficients c give the axis-angle pose c @ components
    coeffs = torch.randn(3, 12, generator=rng)
    basis = torch.tensor(build_standin_mano(True)["hands_components"], dtype=torch.float32)
    via_pca = hand_model.hand("right", global_orient=p["global_orient"], hand_pose=coeffs, pose_format="pca", **common).vertices
    via_aa = hand_model.hand("right", global_orient=p["global_orient"], hand_pose=coeffs @ basis[:12], **common).vertices
    torch.testing.assert_close(via_pca, via_aa, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pose_format"):
        hand_model.hand("right", pose_format="quaternion", **p)


def test_left_is_mirror_of_right_for_mirrored_poses(hand_model, rng):
    p = _params(4, rng)
    aa_mirror = torch.tensor([1.0, -1.0, -1.0])
    mirrored = dict(
        betas=p["betas"],
        global_orient=p["global_orient"] * aa_mirror,
        hand_pose=(p["hand_pose"].reshape(4, 15, 3) * aa_mirror).reshape(4, 45),
        transl=p["transl"] * MIRROR,
    )
    right = hand_model.hand("right", **p)
    left = hand_model.hand("left", **mirrored)
    torch.testing.assert_close(left.vertices, right.vertices * MIRROR, rtol=0, atol=1e-6)
    torch.testing.assert_close(left.joints, right.joints * MIRROR, rtol=0, atol=1e-6)


def test_global_orient_rotates_rigidly_about_the_wrist(hand_model, rng):
    p = _params(2, rng)
    p.pop("transl")
    rest = hand_model.hand("right", **{**p, "global_orient": torch.zeros(2, 3)})
    turned = hand_model.hand("right", **p)
    rot = axis_angle_to_matrix(p["global_orient"])
    # smplx rotates about the root joint of the kinematic tree (J_regressor row 0 of the shaped rest mesh)
    layer = hand_model.layers["right"]
    v_shaped = layer.v_template + torch.einsum("bk,vdk->bvd", p["betas"], layer.shapedirs)
    root = (layer.J_regressor[0] @ v_shaped)[:, None]
    expected = (rest.vertices - root) @ rot.transpose(1, 2) + root
    torch.testing.assert_close(turned.vertices, expected, rtol=0, atol=1e-6)
    # rigid: pairwise distances kept
    exact = "donot_use_mm_for_euclid_dist"
    torch.testing.assert_close(
        torch.cdist(turned.vertices, turned.vertices, compute_mode=exact),
        torch.cdist(rest.vertices, rest.vertices, compute_mode=exact),
        rtol=0,
        atol=1e-6,
    )


def test_two_hand_output_layout(hand_model, rng):
    pr, pl = _params(2, rng), _params(2, rng)
    out = hand_model(pr, pl)
    assert out.vertices.shape == (2, 1556, 3) and out.joints.shape == (2, 42, 3)
    torch.testing.assert_close(out.vertices[:, :778], hand_model.hand("right", **pr).vertices)
    torch.testing.assert_close(out.vertices[:, 778:], hand_model.hand("left", **pl).vertices)
    torch.testing.assert_close(hand_model.regress_joints(out.vertices), out.joints)
    assert hand_model.faces_two_hand.shape == (3076, 3)
    assert hand_model.faces_two_hand[1538:].min() == 778
    with pytest.raises(ValueError, match="778 or 1556"):
        hand_model.regress_joints(out.vertices[:, :100])


def test_left_shapedirs_fix_only_where_needed(tmp_path, hand_model, rng):
    assert hand_model.left_shapedirs_fixed is False
    # mimic the official left file: its x-components of shapedirs carry the right hand's sign
    write_standin_mano(tmp_path)
    left = build_standin_mano(False)
    left["shapedirs"] = left["shapedirs"].copy()
    left["shapedirs"][:, 0, :] *= -1
    (tmp_path / "MANO_LEFT.pkl").write_bytes(pickle.dumps(left))
    fixed = HandModel(tmp_path)
    assert fixed.left_shapedirs_fixed is True
    p = _params(2, rng)
    torch.testing.assert_close(fixed.hand("left", **p).vertices, hand_model.hand("left", **p).vertices, rtol=0, atol=1e-6)


def test_missing_and_malformed_files_give_clear_errors(tmp_path):
    with pytest.raises(MANOFileError, match="MANO folder not found.*make_standin_mano"):
        HandModel(tmp_path / "nope")
    with pytest.raises(MANOFileError, match="MANO_RIGHT.pkl"):
        HandModel(tmp_path)
    model = build_standin_mano(True)
    bad = dict(model)
    del bad["posedirs"]
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(MANOFileError, match="MANO_RIGHT.pkl: missing field 'posedirs'"):
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    bad = dict(model, shapedirs=model["shapedirs"][:700])
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(MANOFileError, match=r"field 'shapedirs' has shape \(700, 3, 10\)"):
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"not a pickle")
    with pytest.raises(MANOFileError, match="not a readable MANO pickle"):
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")


def test_reads_chumpy_arrays_without_chumpy(tmp_path, monkeypatch):
    """Official files store some arrays as chumpy objects; they load without chumpy installed."""
    module = types.ModuleType("chumpy.ch")

    class Ch:  # pickles like chumpy's Ch: class reference (NEWOBJ) plus a state dict with 'x'
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", module)
    model = build_standin_mano(True)
    data = pickle.dumps(dict(model, shapedirs=Ch(model["shapedirs"])))
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(data)
    loaded = load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(loaded["shapedirs"], model["shapedirs"])


def test_interhand_joint_order_tables():
    assert sorted(IH26M_TO_OURS) == list(range(21))
    for ours, ih in enumerate(IH26M_TO_OURS):
        assert IH26M_JOINT_NAMES[ih] == JOINT_NAMES[ours]
    for ih, ours in enumerate(OURS_TO_IH26M):
        assert IH26M_TO_OURS[ours] == ih
    assert IH26M_JOINT_NAMES[0] == "thumb4" and IH26M_JOINT_NAMES[20] == "wrist"


def test_to_camera_equals_transforming_the_world_mesh(hand_model, rng):
    p = _params(3, rng)
    rot = axis_angle_to_matrix(torch.randn(3, 3, generator=rng))
    trans = torch.randn(3, 3, generator=rng)
    world = hand_model.hand("left", **p).vertices
    orient_cam, transl_cam = hand_model.to_camera("left", p["global_orient"], p["betas"], p["transl"], rot, trans)
    cam = hand_model.hand("left", betas=p["betas"], global_orient=orient_cam, hand_pose=p["hand_pose"], transl=transl_cam).vertices
    torch.testing.assert_close(cam, world @ rot.transpose(1, 2) + trans[:, None], rtol=0, atol=1e-5)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_mano_files_of_every_pickle_protocol_load(tmp_path, protocol):
    """The allow-list covers numpy arrays and scalars and scipy.sparse matrices as any protocol
    writes them (the official files are Python 2 protocol-2 pickles)."""
    model = build_standin_mano(True)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(dict(model, bs_style="lbs", scale=np.float64(1.0)), protocol=protocol))
    loaded = load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(loaded["J_regressor"], model["J_regressor"].toarray())
    np.testing.assert_array_equal(loaded["shapedirs"], model["shapedirs"])


class _Payload:
    """Runs a shell command when unpickled, as a malicious shared file would."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["top level", "inside an array field"])
def test_a_malicious_mano_pickle_runs_no_code(tmp_path, where):
    marker = tmp_path / "marker"
    model = build_standin_mano(True)
    bad = _Payload(marker) if where == "top level" else dict(model, hands_components=[_Payload(marker)])
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(bad, protocol=2))
    write_standin_mano(tmp_path / "ok")
    (tmp_path / "MANO_LEFT.pkl").write_bytes((tmp_path / "ok" / "MANO_LEFT.pkl").read_bytes())
    with pytest.raises(MANOFileError, match=r"MANO_RIGHT.pkl: not a readable MANO pickle .*refused to load posix\.system"):
        HandModel(tmp_path)
    assert not marker.exists()


def test_skeleton_joints_are_the_rest_joints_moved_rigidly_along_the_chain(hand_model):
    """`HandOutput.skeleton`: the wrist stays at the shaped rest wrist (global_orient turns about
    it), and every bone keeps its rest length (the chain moves rest joints rigidly)."""
    import torch

    from handrecon.hand_model.constants import MANO_PARENTS

    g = torch.Generator().manual_seed(0)
    betas = torch.randn(3, 10, generator=g)
    for side in ("right", "left"):
        out = hand_model.hand(side, betas, torch.randn(3, 3, generator=g), 0.5 * torch.randn(3, 45, generator=g))
        rest = hand_model.hand(side, betas, torch.zeros(3, 3), -hand_model.layers[side].hand_mean.expand(3, -1))
        assert out.skeleton.shape == (3, 16, 3)
        torch.testing.assert_close(out.skeleton[:, 0], hand_model.rest_root(side, betas), rtol=0, atol=1e-6)
        for j, parent in enumerate(MANO_PARENTS[1:], start=1):
            bone, rest_bone = (s[:, j] - s[:, parent] for s in (out.skeleton, rest.skeleton))
            torch.testing.assert_close(bone.norm(dim=-1), rest_bone.norm(dim=-1), rtol=1e-5, atol=1e-6)
