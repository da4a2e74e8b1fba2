"""Metrics: closed-form cases, invariances, selection rules, a naive per-sample reference, bootstrap."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hand_cases import random_hand_meshes
from scipy.spatial.transform import Rotation

from handrecon.data.readers import list_datasets
from handrecon.metrics import (
    DATASET_RULES,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_indices,
    evaluate,
    hand_type_codes,
    mpjpe_per_hand,
    mpvpe_per_hand,
    mrrpe_per_sample,
    rrve_per_sample,
    wrist_aligned,
)

list_datasets()  # imports every reader module: all datasets' rules are registered, whatever ran before
SIDES = ("right", "left")
IW_KEYS = {
    f"interwild/{k}"
    for k in (
        "mpvpe_all_wrist_mm", "mpvpe_single_wrist_mm", "mpvpe_inter_wrist_mm", "rrve_rightwrist_mm", "mrrpe_mm",
        "mpjpe_all_wrist_mm", "mpjpe_single_wrist_mm", "mpjpe_inter_wrist_mm",
    )
}  # fmt: skip
DIR_KEYS = {
    f"dir/{m}{s}_mcp_scaled_mm" for m in ("mpvpe", "mpjpe") for s in ("", "_right", "_left")
} | {"dir/mrrpe_mm"}


@pytest.fixture(scope="module")
def regs(hand_model):
    """(2, 21, 778) float64; rows renormalised to sum exactly 1 (as MANO's), so the regressed
    joints move rigidly with the mesh and closed-form cases hold to float64 precision."""
    r = np.stack([hand_model.joint_regressor(s).double().numpy() for s in SIDES])
    return r / r.sum(-1, keepdims=True)


def _gt(hand_model, regs, n, seed, hand_types=None, annot_noise=0.0, extra_hands=0.0):
    """Random posed hands; invalid hands are zeros with every flag False (the readers' layout).
    annot_noise (m) makes the annotated joints differ from the mesh-regressed ones; extra_hands
    is the chance that a single-hand sample also has a valid mesh for its other hand."""
    rng = np.random.default_rng(seed)
    if hand_types is None:
        hand_types = rng.choice(["right", "left", "interacting"], size=n)
    hand_types = np.asarray(hand_types)
    mesh_valid = np.stack([hand_types != "left", hand_types != "right"], 1)
    mesh_valid |= (hand_types != "interacting")[:, None] & (rng.random((n, 1)) < extra_hands)
    verts = random_hand_meshes(hand_model, n, seed) * np.repeat(mesh_valid, 778, 1)[..., None]
    joints = np.einsum("hjv,nhvd->nhjd", regs, verts.reshape(n, 2, 778, 3)).reshape(n, 42, 3)
    joints = (joints + rng.normal(scale=annot_noise, size=joints.shape)) * np.repeat(mesh_valid, 21, 1)[..., None]
    return {"verts": verts, "mesh_valid": mesh_valid, "joints3d": joints, "joints_valid": np.repeat(mesh_valid, 21, 1), "hand_type": hand_types}


def _take(d, idx):
    return {k: v[idx] for k, v in d.items()}


def _rotate_about(v, centre, axis, theta):
    rot = Rotation.from_rotvec(theta * np.asarray(axis)).as_matrix()
    return (v - centre) @ rot.T + centre


def _chords(v, centre, axis, theta):
    """Mean displacement (mm) of points `v` rotated by theta about the line (centre, axis)."""
    rel = v - centre
    r_perp = np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
    return float(np.mean(2 * r_perp * np.sin(theta / 2)) * 1000)


# --- closed-form cases ----------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", sorted(DATASET_RULES))
def test_shared_translation_changes_nothing(hand_model, regs, dataset):
    gt = _gt(hand_model, regs, 12, 0)
    pred = {"verts": gt["verts"] + np.array([0.03, -0.2, 0.5])}
    for protocol in ("interwild", "dir"):
        res = evaluate(pred, gt, protocol=protocol, dataset=dataset, regressors=regs)
        for key, value in res.summary.items():
            if not any(EXPECTED_MRRPE[dataset]) and key.startswith("interwild/") and ("mrrpe" in key or "rrve" in key):
                assert math.isnan(value), key  # a dataset without relative placement (mscoco) has no sample for them
            else:
                assert value == pytest.approx(0.0, abs=1e-6), key


def test_left_hand_shift_gives_known_mrrpe_and_rrve(hand_model, regs):
    n = 10
    gt = _gt(hand_model, regs, n, 1, hand_types=["interacting"] * n)
    d = np.array([0.012, -0.005, 0.02])
    pred = {"verts": gt["verts"].copy()}
    pred["verts"][:, 778:] += d
    norm_mm = np.linalg.norm(d) * 1000
    for dataset in sorted(DATASET_RULES):
        res = evaluate(pred, gt, dataset=dataset, regressors=regs).summary
        assert res["interwild/mpvpe_all_wrist_mm"] == pytest.approx(0.0, abs=1e-6)
        assert res["interwild/mpjpe_all_wrist_mm"] == pytest.approx(0.0, abs=1e-6)
        if not any(EXPECTED_MRRPE[dataset]):  # mscoco: no relative placement annotated
            assert math.isnan(res["interwild/mrrpe_mm"]) and math.isnan(res["interwild/rrve_rightwrist_mm"])
            continue
        # the left wrist moves with the hand, so rel changes by d
        assert res["interwild/mrrpe_mm"] == pytest.approx(norm_mm, rel=1e-9)
        # right-wrist frame: the 778 left vertices are off by |d|, the 778 right ones by 0
        assert res["interwild/rrve_rightwrist_mm"] == pytest.approx(norm_mm / 2, rel=1e-9)
    dir_res = evaluate(pred, gt, protocol="dir", dataset="reih", regressors=regs).summary
    assert dir_res["dir/mrrpe_mm"] == pytest.approx(norm_mm, rel=1e-9)  # the MCP offset changes by d too
    # a separately predicted rel (left wrist - right wrist) replaces the meshes' wrist difference
    rel_gt = gt["joints3d"][:, 21] - gt["joints3d"][:, 0]
    res = evaluate({**pred, "rel_trans": rel_gt}, gt, dataset="reih", regressors=regs).summary
    assert res["interwild/mrrpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert res["interwild/rrve_rightwrist_mm"] == pytest.approx(0.0, abs=1e-6)
    dir_res = evaluate({**pred, "rel_trans": rel_gt}, gt, protocol="dir", dataset="reih", regressors=regs).summary
    assert dir_res["dir/mrrpe_mm"] == pytest.approx(0.0, abs=1e-6)  # the sign conventions agree
    res = evaluate({**pred, "rel_trans": np.zeros((n, 3))}, gt, dataset="reih", regressors=regs).summary
    assert res["interwild/mrrpe_mm"] == pytest.approx(np.linalg.norm(rel_gt, axis=1).mean() * 1000, rel=1e-9)


def test_rotation_about_the_wrist_gives_the_chord_length(hand_model, regs):
    gt = _gt(hand_model, regs, 1, 2, hand_types=["right"])
    theta, axis = 0.3, np.array([0.0, 0.6, 0.8])
    v = gt["verts"][0, :778]
    wrist = regs[0, 0] @ v
    pred = gt["verts"].copy()
    pred[0, :778] = _rotate_about(v, wrist, axis, theta)
    res = evaluate({"verts": pred}, gt, dataset="ih26m", regressors=regs)
    expected = _chords(v, wrist, axis, theta)
    assert res.summary["interwild/mpvpe_all_wrist_mm"] == pytest.approx(expected, rel=1e-9)
    assert res.summary["interwild/mpvpe_single_wrist_mm"] == pytest.approx(expected, rel=1e-9)
    assert math.isnan(res.summary["interwild/mpvpe_inter_wrist_mm"])
    assert res.per_sample["interwild/mpvpe_right_wrist_mm"][0] == pytest.approx(expected, rel=1e-9)
    assert math.isnan(res.per_sample["interwild/mpvpe_left_wrist_mm"][0])


def test_known_vertex_noise_gives_its_mean(hand_model, regs):
    """Noise of length sigma on vertices the wrist regressor ignores: wrist-aligned error known."""
    n, sigma = 6, 0.004
    gt = _gt(hand_model, regs, n, 3, hand_types=["interacting"] * n)
    rng = np.random.default_rng(0)
    pred = gt["verts"].copy()
    expected = []
    for h in range(2):
        free = np.flatnonzero(regs[h, 0] == 0)
        noisy = rng.choice(free, size=300, replace=False)
        dirs = rng.normal(size=(n, len(noisy), 3))
        pred[:, 778 * h + noisy] += sigma * dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
        expected.append(sigma * 1000 * len(noisy) / 778)
    res = evaluate({"verts": pred}, gt, dataset="ih26m", regressors=regs)
    assert res.summary["interwild/mpvpe_all_wrist_mm"] == pytest.approx(np.mean(expected), rel=1e-9)
    np.testing.assert_allclose(res.per_sample["interwild/mpvpe_right_wrist_mm"], expected[0], rtol=1e-9)
    np.testing.assert_allclose(res.per_sample["interwild/mpvpe_left_wrist_mm"], expected[1], rtol=1e-9)


def test_core_functions_on_their_own(hand_model, regs):
    gt = _gt(hand_model, regs, 4, 4, hand_types=["interacting", "right", "left", "interacting"])
    aligned = wrist_aligned(gt["verts"][:, :778], regs[0])
    assert torch.allclose(torch.as_tensor(regs[0, 0]) @ aligned[[0, 1, 3]], torch.zeros(3, 3, dtype=torch.float64), atol=1e-12)
    pred = gt["verts"] + 0.001
    e = mpvpe_per_hand(pred, gt["verts"], gt["mesh_valid"], regs)
    assert e.shape == (4, 2) and torch.isnan(e[1, 1]) and torch.isnan(e[2, 0]) and float(e.nan_to_num().abs().max()) < 1e-9
    rel = np.ones((4, 3))
    rr = rrve_per_sample(pred, gt["verts"], rel, rel + [0.003, 0.0, 0.004], gt["mesh_valid"].all(1), regs)
    assert rr.shape == (4,) and torch.isnan(rr[1]) and float(rr[0]) == pytest.approx(2.5, rel=1e-9)  # 5 mm on half the verts
    assert mrrpe_per_sample(rel, rel + [0.0, 0.003, 0.004]).tolist() == pytest.approx([5.0] * 4)
    jv = gt["joints_valid"].copy()
    jv[0, 21] = False  # left wrist unannotated: the whole left hand is undefined
    m = mpjpe_per_hand(gt["joints3d"] + 0.01, gt["joints3d"], jv)
    assert m.shape == (4, 2) and torch.isnan(m[0, 1]) and float(m[0, 0]) == pytest.approx(0.0, abs=1e-9)


def test_numpy_and_torch_inputs_agree(hand_model, regs):
    gt = _gt(hand_model, regs, 8, 5, annot_noise=0.002)
    pred = {"verts": gt["verts"] + np.random.default_rng(0).normal(scale=0.003, size=gt["verts"].shape)}
    a = evaluate(pred, gt, regressors=regs).summary
    tgt = {k: (torch.as_tensor(v) if k != "hand_type" else list(v)) for k, v in gt.items()}
    b = evaluate({"verts": torch.as_tensor(pred["verts"], dtype=torch.float32)}, tgt, regressors=torch.as_tensor(regs)).summary
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-3), key  # float32 predictions


# --- naive per-sample references (written from the protocol definitions, one sample at a time) ----
def _mean(x):
    return float(np.mean(x)) if len(x) else float("nan")


def _naive_interwild(pred, gt, regs, dataset, strict=False):
    """InterWild's evaluate() rules per dataset; strict: the `interwild_strict` rules."""
    if strict:
        return _naive_interwild_strict(pred, gt, regs, dataset)
    P_ = "interwild"
    n = len(gt["hand_type"])
    annot_j, annot_v = (gt["annot_joints3d"], gt["annot_joints_valid"]) if "annot_joints3d" in gt else (gt["joints3d"], gt["joints_valid"])
    kept = gt.get("annot_sample_valid", np.ones(n, bool))
    vert_sh, vert_ih, rrve, mrrpe = [], [], [], []
    joint_sh, joint_ih = [[] for _ in range(42)], [[] for _ in range(42)]
    for i in range(n):
        if not kept[i]:
            continue
        ht = gt["hand_type"][i]
        inter = ht == "interacting"
        P = [pred["verts"][i, 778 * h : 778 * (h + 1)] for h in range(2)]
        G = [gt["verts"][i, 778 * h : 778 * (h + 1)] * gt["mesh_valid"][i, h] for h in range(2)]  # a missing mesh is zeros
        pj = [regs[h] @ P[h] for h in range(2)]
        gj = [regs[h] @ G[h] for h in range(2)]
        if dataset == "reih":
            counted = [True, True]
        else:
            counted = [bool(gt["mesh_valid"][i, h]) and ht in (SIDES[h], "interacting") for h in range(2)]
        _naive_hand_mpvpe(P, G, pj, gj, counted, vert_ih if inter else vert_sh)
        both_meshes = bool(gt["mesh_valid"][i].all())
        wrists_annotated = bool(annot_v[i, 0] and annot_v[i, 21])
        annotated_rel = annot_j[i, 21] - annot_j[i, 0]
        if dataset == "ih26m":
            sel_mrrpe, sel_rrve, rel_g = wrists_annotated, inter and both_meshes, annotated_rel
        elif dataset == "hic":
            sel_mrrpe, sel_rrve, rel_g = inter, inter and both_meshes, gj[1][0] - gj[0][0]
        elif dataset == "mscoco":
            sel_mrrpe, sel_rrve, rel_g = False, False, None
        else:  # reih
            sel_mrrpe, sel_rrve, rel_g = wrists_annotated, wrists_annotated, annotated_rel
        rel_p = pred["rel_trans"][i] if "rel_trans" in pred else pj[1][0] - pj[0][0]
        if sel_mrrpe:
            mrrpe.append(np.linalg.norm(rel_p - rel_g) * 1000)
        if sel_rrve:
            rrve.append(_naive_rrve(P, G, pj, gj, rel_p, rel_g))
        pred_joints = pred["joints3d"][i] if "joints3d" in pred else np.concatenate(pj)
        if dataset == "ih26m":
            target, target_valid = annot_j[i], annot_v[i]
        else:
            target, target_valid = np.concatenate(gj), np.repeat(counted, 21)
        _naive_joint_errors(pred_joints, target, target_valid, joint_ih if inter else joint_sh)
    return _naive_summary(P_, vert_sh, vert_ih, rrve, mrrpe, joint_sh, joint_ih)


def _naive_hand_mpvpe(P, G, pj, gj, counted, bucket):
    """Appends each counted hand's wrist-relative mean vertex error (mm) to bucket, one vertex at a time."""
    for h in range(2):
        if counted[h]:
            bucket.append(np.mean([np.linalg.norm((P[h][k] - pj[h][0]) - (G[h][k] - gj[h][0])) for k in range(778)]) * 1000)


def _naive_rrve(P, G, pj, gj, rel_p, rel_g):
    """Both meshes, each at its wrist and the left one moved by the relative translation: mean vertex error (mm)."""
    p_all = np.concatenate([P[0] - pj[0][0], P[1] - pj[1][0] + rel_p])
    g_all = np.concatenate([G[0] - gj[0][0], G[1] - gj[1][0] + rel_g])
    return np.mean(np.linalg.norm(p_all - g_all, axis=1)) * 1000


def _naive_joint_errors(pred_joints, target, target_valid, bucket):
    """Appends each valid joint's wrist-relative error (mm) to bucket[joint], one joint at a time."""
    for h in range(2):
        root = 21 * h
        for j in range(root, root + 21):
            if target_valid[j] and target_valid[root]:
                bucket[j].append(np.linalg.norm((pred_joints[j] - pred_joints[root]) - (target[j] - target[root])) * 1000)


def _naive_summary(P_, vert_sh, vert_ih, rrve, mrrpe, joint_sh, joint_ih):
    means_sh = [np.mean(e) for e in joint_sh if e]
    means_ih = [np.mean(e) for e in joint_ih if e]
    return {
        f"{P_}/mpvpe_all_wrist_mm": _mean(vert_sh + vert_ih),
        f"{P_}/mpvpe_single_wrist_mm": _mean(vert_sh),
        f"{P_}/mpvpe_inter_wrist_mm": _mean(vert_ih),
        f"{P_}/rrve_rightwrist_mm": _mean(rrve),
        f"{P_}/mrrpe_mm": _mean(mrrpe),
        f"{P_}/mpjpe_all_wrist_mm": _mean(means_sh + means_ih),
        f"{P_}/mpjpe_single_wrist_mm": _mean(means_sh),
        f"{P_}/mpjpe_inter_wrist_mm": _mean(means_ih),
    }


def _naive_interwild_strict(pred, gt, regs, dataset):
    """The `interwild_strict` rules: labels (annotated AND 3D-valid, hands in hand_type), both
    meshes for every relative metric."""
    n = len(gt["hand_type"])
    vert_sh, vert_ih, rrve, mrrpe = [], [], [], []
    joint_sh, joint_ih = [[] for _ in range(42)], [[] for _ in range(42)]
    for i in range(n):
        ht = gt["hand_type"][i]
        inter = ht == "interacting"
        P = [pred["verts"][i, 778 * h : 778 * (h + 1)] for h in range(2)]
        G = [gt["verts"][i, 778 * h : 778 * (h + 1)] for h in range(2)]
        pj = [regs[h] @ P[h] for h in range(2)]
        gj = [regs[h] @ G[h] for h in range(2)]
        counted = [bool(gt["mesh_valid"][i, h]) and ht in (SIDES[h], "interacting") for h in range(2)]
        _naive_hand_mpvpe(P, G, pj, gj, counted, vert_ih if inter else vert_sh)
        both_meshes = bool(gt["mesh_valid"][i].all())
        wrists_annotated = bool(gt["joints_valid"][i, 0] and gt["joints_valid"][i, 21])
        annotated_rel = gt["joints3d"][i, 21] - gt["joints3d"][i, 0]
        if dataset == "ih26m":
            selected, rel_g = wrists_annotated, annotated_rel
        elif dataset == "hic":
            selected, rel_g = inter and both_meshes, gj[1][0] - gj[0][0]
        elif dataset == "mscoco":  # no relative placement annotated: no MRRPE / RRVE sample
            selected, rel_g = False, None
        else:  # reih
            selected, rel_g = wrists_annotated, annotated_rel
        rel_p = pred["rel_trans"][i] if "rel_trans" in pred else pj[1][0] - pj[0][0]
        if selected:
            mrrpe.append(np.linalg.norm(rel_p - rel_g) * 1000)
        if selected and both_meshes:
            rrve.append(_naive_rrve(P, G, pj, gj, rel_p, rel_g))
        pred_joints = pred["joints3d"][i] if "joints3d" in pred else np.concatenate(pj)
        if dataset == "ih26m":
            target, target_valid = gt["joints3d"][i], gt["joints_valid"][i]
        else:
            target, target_valid = np.concatenate(gj), np.repeat(counted, 21)
        _naive_joint_errors(pred_joints, target, target_valid, joint_ih if inter else joint_sh)
    return _naive_summary("interwild_strict", vert_sh, vert_ih, rrve, mrrpe, joint_sh, joint_ih)


def _naive_dir(pred, gt, regs, root=9):
    """DIR's apps/eval.py per sample: each hand aligned at joint `root` and scaled by the gt/pred
    wrist-to-middle-MCP bone; the roots' offset for MRRPE."""
    align = "mcp" if root == 9 else "wrist"
    verts_err = {"right": [], "left": []}
    joints_err = {"right": [], "left": []}
    root_err = []
    for i in range(len(gt["hand_type"])):
        if gt["hand_type"][i] != "interacting" or not gt["mesh_valid"][i].all():
            continue
        P = [pred["verts"][i, 778 * h : 778 * (h + 1)] for h in range(2)]
        G = [gt["verts"][i, 778 * h : 778 * (h + 1)] for h in range(2)]
        pj = [regs[h] @ P[h] for h in range(2)]
        gj = [regs[h] @ G[h] for h in range(2)]
        for h, side in enumerate(SIDES):
            scale = np.linalg.norm(gj[h][9] - gj[h][0]) / np.linalg.norm(pj[h][9] - pj[h][0])
            verts_err[side] += list(np.linalg.norm((P[h] - pj[h][root]) * scale - (G[h] - gj[h][root]), axis=1))
            joints_err[side] += list(np.linalg.norm((pj[h] - pj[h][root]) * scale - (gj[h] - gj[h][root]), axis=1))
        left_pred = pj[1]
        if "rel_trans" in pred:  # put the left wrist at right wrist + rel
            left_pred = pj[1] - pj[1][0] + pj[0][0] + pred["rel_trans"][i]
        root_err.append(np.linalg.norm((gj[0][root] - gj[1][root]) - (pj[0][root] - left_pred[root])))
    out = {"dir/mrrpe_mm" if root == 9 else "dir/mrrpe_wrist_mm": _mean(root_err) * 1000}
    for metric, errs in (("mpvpe", verts_err), ("mpjpe", joints_err)):
        right, left = _mean(errs["right"]) * 1000, _mean(errs["left"]) * 1000
        out[f"dir/{metric}_right_{align}_scaled_mm"] = right
        out[f"dir/{metric}_left_{align}_scaled_mm"] = left
        out[f"dir/{metric}_{align}_scaled_mm"] = (right + left) / 2
    return out


def _random_case(hand_model, regs, n, seed):
    gt = _gt(hand_model, regs, n, seed, annot_noise=0.002, extra_hands=0.3)
    rng = np.random.default_rng(seed)
    gt["joints_valid"] &= rng.random(gt["joints_valid"].shape) > 0.15  # unannotated joints, wrists included
    pred = {"verts": gt["verts"] + rng.normal(scale=0.004, size=gt["verts"].shape) + rng.normal(scale=0.01, size=(n, 1, 3))}
    return gt, pred


@pytest.mark.parametrize("dataset", sorted(DATASET_RULES))
def test_equals_naive_loop(hand_model, regs, dataset):
    gt, pred = _random_case(hand_model, regs, 24, 6)
    rng = np.random.default_rng(7)
    variants = {
        "meshes only": pred,
        "with rel_trans and joints3d": {
            **pred,
            "rel_trans": rng.normal(scale=0.1, size=(24, 3)),
            "joints3d": gt["joints3d"] + rng.normal(scale=0.005, size=(24, 42, 3)),
        },
    }
    for name, p in variants.items():
        for strict in (False, True):
            protocol = "interwild_strict" if strict else "interwild"
            got = evaluate(p, gt, protocol=protocol, dataset=dataset, regressors=regs).summary
            ref = _naive_interwild(p, gt, regs, dataset, strict)
            assert set(got) == set(ref) == {k.replace("interwild/", f"{protocol}/") for k in IW_KEYS}
            for key in ref:
                assert got[key] == pytest.approx(ref[key], abs=1e-4, nan_ok=True), (name, key)
                undefined = dataset == "mscoco" and ("rrve" in key or "mrrpe" in key)  # no relative placement annotated
                assert math.isnan(ref[key]) == undefined, (name, key)  # the case exercises every key the dataset defines
        scores = {}
        for protocol, root in (("dir", 9), ("dir_wrist", 0)):
            got = scores[protocol] = evaluate(p, gt, protocol=protocol, dataset=dataset, regressors=regs).summary
            ref = _naive_dir(p, gt, regs, root)
            assert set(got) == set(ref) and (root == 0 or set(ref) == DIR_KEYS)
            for key in ref:
                assert got[key] == pytest.approx(ref[key], abs=1e-4), (name, protocol, key)
        # the root joint matters: the two alignments score the same predictions differently
        assert scores["dir_wrist"]["dir/mpvpe_wrist_scaled_mm"] != pytest.approx(scores["dir"]["dir/mpvpe_mcp_scaled_mm"], abs=1e-3)


def test_chunking_does_not_change_results(hand_model, regs, monkeypatch):
    import handrecon.metrics as metrics

    gt, pred = _random_case(hand_model, regs, 20, 8)
    whole = evaluate(pred, gt, regressors=regs)
    monkeypatch.setattr(metrics, "CHUNK", 3)
    chunked = evaluate(pred, gt, regressors=regs)
    assert chunked.summary == pytest.approx(whole.summary, nan_ok=True)
    for key in whole.per_sample:
        np.testing.assert_allclose(chunked.per_sample[key], whole.per_sample[key], equal_nan=True)


# --- validity and selection -------------------------------------------------------------------
@pytest.mark.parametrize("dataset", sorted(DATASET_RULES))
def test_invalid_hands_do_not_count(hand_model, regs, dataset):
    gt, pred = _random_case(hand_model, regs, 16, 9)
    junk = pred["verts"].copy()
    junk[np.repeat(~gt["mesh_valid"], 778, 1)] += np.random.default_rng(1).normal(scale=3.0, size=3)
    # InterWild scores both Re:InterHand hands of every sample, a missing fit as a zero mesh
    protocols = ("interwild_strict", "dir") if dataset == "reih" else ("interwild", "interwild_strict", "dir")
    for protocol in protocols:
        base = evaluate(pred, gt, protocol=protocol, dataset=dataset, regressors=regs)
        other = evaluate({"verts": junk}, gt, protocol=protocol, dataset=dataset, regressors=regs)
        assert other.summary == pytest.approx(base.summary, nan_ok=True)
        for key in base.per_sample:
            np.testing.assert_allclose(other.per_sample[key], base.per_sample[key], equal_nan=True, err_msg=key)


def _selection_case(hand_model, regs):
    """0 interacting, both meshes and wrists; 1 interacting, left wrist unannotated; 2 right only;
    3 'right' sample that nevertheless has both meshes and wrists; 4 interacting, left mesh only."""
    gt = _gt(hand_model, regs, 5, 10, hand_types=["interacting"] * 5, annot_noise=0.002)
    gt["hand_type"] = np.array(["interacting", "interacting", "right", "right", "interacting"])
    gt["joints_valid"][1, 21:] = False
    gt["mesh_valid"][2, 1] = False
    gt["joints_valid"][2, 21:] = False
    gt["mesh_valid"][4, 0] = False
    return gt


EXPECTED_MRRPE = {  # InterWild's evaluate() rules (the `interwild` protocol)
    "ih26m": [True, False, False, True, True],  # both wrists annotated, any hand_type
    "hic": [True, True, False, False, True],  # every interacting sample, a missing mesh as a zero mesh
    "reih": [True, False, False, True, True],  # every sample with both keypoint wrists (no mesh needed)
    "mscoco": [False] * 5,  # the two hands' fits are not placed relative to each other
}
EXPECTED_RRVE = {
    "ih26m": [True, True, False, False, False],  # interacting with both MANO fits, no wrist checked
    "hic": [True, True, False, False, False],  # interacting with both meshes
    "reih": [True, False, False, True, True],  # every MRRPE sample, a missing fit as a zero mesh
    "mscoco": [False] * 5,
}
EXPECTED_MRRPE_STRICT = {  # `interwild_strict`: RRVE = these samples with both meshes
    "ih26m": [True, False, False, True, True],
    "hic": [True, True, False, False, False],  # interacting with both meshes
    "reih": [True, False, False, True, True],
    "mscoco": [False] * 5,
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED_MRRPE))
def test_mrrpe_selection_policies_select_what_they_claim(hand_model, regs, dataset):
    assert set(EXPECTED_MRRPE) == set(DATASET_RULES)
    gt = _selection_case(hand_model, regs)
    chunk = {
        "hand_type": hand_type_codes(gt["hand_type"]),
        "mesh_valid": torch.as_tensor(gt["mesh_valid"]),
        "joints_valid": torch.as_tensor(gt["joints_valid"]),
    }
    pred = {"verts": gt["verts"] + np.random.default_rng(0).normal(scale=0.005, size=gt["verts"].shape)}
    rules = DATASET_RULES[dataset]
    for protocol, mrrpe_expected, rrve_expected in (
        ("interwild", EXPECTED_MRRPE[dataset], EXPECTED_RRVE[dataset]),
        ("interwild_strict", EXPECTED_MRRPE_STRICT[dataset], np.array(EXPECTED_MRRPE_STRICT[dataset]) & gt["mesh_valid"].all(1)),
    ):
        expected = np.array(mrrpe_expected)
        select = (rules.strict or rules).mrrpe_select if protocol == "interwild_strict" else rules.mrrpe_select
        assert select(chunk).tolist() == expected.tolist(), protocol
        res = evaluate(pred, gt, protocol=protocol, dataset=dataset, regressors=regs)
        per = res.per_sample[f"{protocol}/mrrpe_mm"]
        assert np.isfinite(per).tolist() == expected.tolist(), protocol
        assert res.summary[f"{protocol}/mrrpe_mm"] == pytest.approx(per[expected].mean(), nan_ok=True)  # NaN: no sample (mscoco)
        rrve = res.per_sample[f"{protocol}/rrve_rightwrist_mm"]
        assert np.isfinite(rrve).tolist() == list(rrve_expected), protocol
    # the DIR protocol has one sample set whatever the dataset: interacting with both meshes
    dir_res = evaluate(pred, gt, protocol="dir", dataset=dataset, regressors=regs)
    assert np.isfinite(dir_res.per_sample["dir/mrrpe_mm"]).tolist() == [True, True, False, False, False]


# --- DIR protocol ---------------------------------------------------------------------------------
def test_dir_ignores_prediction_scale(hand_model, regs):
    n = 6
    gt = _gt(hand_model, regs, n, 11, hand_types=["interacting"] * n)
    rng = np.random.default_rng(2)
    pred = gt["verts"].copy()
    for h in range(2):  # any factor about any centre: the bone-length normalisation undoes it
        part = slice(778 * h, 778 * (h + 1))
        centre = rng.normal(scale=0.3, size=(n, 1, 3))
        pred[:, part] = centre + rng.uniform(0.7, 1.4, size=(n, 1, 1)) * (pred[:, part] - centre)
    dir_res = evaluate({"verts": pred}, gt, protocol="dir", dataset="reih", regressors=regs).summary
    for key in DIR_KEYS - {"dir/mrrpe_mm"}:
        assert dir_res[key] == pytest.approx(0.0, abs=1e-6), key
    iw = evaluate({"verts": pred}, gt, protocol="interwild", dataset="reih", regressors=regs).summary
    assert iw["interwild/mpvpe_all_wrist_mm"] > 5.0


def test_dir_root_is_the_middle_mcp(hand_model, regs):
    """Rotating the right hand about its middle MCP: DIR sees chords about the MCP (bone length is
    kept, so no rescaling); InterWild, aligning at the wrist, sees chords about the wrist."""
    gt = _gt(hand_model, regs, 1, 12, hand_types=["interacting"])
    theta, axis = 0.25, np.array([0.48, 0.0, 0.6]) / np.linalg.norm([0.48, 0.0, 0.6])
    v = gt["verts"][0, :778]
    mcp, wrist = regs[0, 9] @ v, regs[0, 0] @ v
    pred = gt["verts"].copy()
    pred[0, :778] = _rotate_about(v, mcp, axis, theta)
    dir_res = evaluate({"verts": pred}, gt, protocol="dir", dataset="hic", regressors=regs).summary
    about_mcp, about_wrist = _chords(v, mcp, axis, theta), _chords(v, wrist, axis, theta)
    assert abs(about_mcp - about_wrist) > 1.0  # the two roots are distinguishable
    assert dir_res["dir/mpvpe_right_mcp_scaled_mm"] == pytest.approx(about_mcp, rel=1e-9)
    assert dir_res["dir/mpvpe_left_mcp_scaled_mm"] == pytest.approx(0.0, abs=1e-9)
    assert dir_res["dir/mpvpe_mcp_scaled_mm"] == pytest.approx(about_mcp / 2, rel=1e-9)
    iw = evaluate({"verts": pred}, gt, protocol="interwild", dataset="hic", regressors=regs).summary
    assert iw["interwild/mpvpe_inter_wrist_mm"] == pytest.approx(about_wrist / 2, rel=1e-9)  # two hands, one moved


# --- bootstrap --------------------------------------------------------------------------------------
def test_bootstrap_is_deterministic_by_seed(hand_model, regs):
    gt, pred = _random_case(hand_model, regs, 30, 13)
    res = evaluate(pred, gt, regressors=regs)
    ci = bootstrap_ci(res, n=200, seed=0)
    assert set(ci) == set(res.summary)
    assert ci == bootstrap_ci(res, n=200, seed=0)
    assert ci != bootstrap_ci(res, n=200, seed=1)


@pytest.mark.parametrize("protocol", ["interwild", "dir"])
def test_bootstrap_recomputes_the_summary_on_resampled_samples(hand_model, regs, protocol):
    """Each bootstrap value equals `evaluate` run on the resampled samples themselves."""
    gt, pred = _random_case(hand_model, regs, 20, 14)
    res = evaluate(pred, gt, protocol=protocol, dataset="ih26m", regressors=regs)
    dist = bootstrap_distribution(res, n=6, seed=3)
    idx = bootstrap_indices(20, n=6, seed=3)
    for b in range(6):
        again = evaluate(_take(pred, idx[b]), _take(gt, idx[b]), protocol=protocol, dataset="ih26m", regressors=regs).summary
        for key, value in again.items():
            assert dist[key][b] == pytest.approx(value, rel=1e-9, nan_ok=True), (b, key)


def test_bootstrap_generic_values_and_aggregator():
    values = np.random.default_rng(0).exponential(size=50)
    stats = {"x": np.stack([values, np.ones(50)], 1)}  # per-sample (sum, count)
    ci = bootstrap_ci(stats, lambda s: {"mean": s["x"][:, 0] / s["x"][:, 1]}, n=400, seed=5)
    means = values[bootstrap_indices(50, n=400, seed=5)].mean(1)
    assert ci["mean"] == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)), rel=1e-12)


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_samples(hand_model, regs):
    gt, pred = _random_case(hand_model, regs, 160, 15)
    key = "interwild/mpvpe_all_wrist_mm"
    big = evaluate(pred, gt, regressors=regs)
    lo, hi = bootstrap_ci(big, n=400, seed=0)[key]
    assert lo < big.summary[key] < hi
    small = evaluate(_take(pred, slice(0, 16)), _take(gt, slice(0, 16)), regressors=regs)
    lo_s, hi_s = bootstrap_ci(small, n=400, seed=0)[key]
    assert lo_s < small.summary[key] < hi_s
    assert hi - lo < 0.6 * (hi_s - lo_s)  # 10x the samples: about 1/sqrt(10) the width


@pytest.mark.parametrize("protocol", ["interwild", "dir"])
@pytest.mark.parametrize("key", ["verts", "rel_trans", "joints3d"])
def test_evaluate_refuses_nonfinite_predictions(hand_model, regs, protocol, key):
    """A NaN prediction is an error naming the array and sample, never a skipped (better) value."""
    from handrecon.metrics import NonFinitePredictionError

    n = 6
    gt = _gt(hand_model, regs, n, 3, hand_types=["interacting"] * n)
    pred = {"verts": gt["verts"].copy(), "rel_trans": gt["joints3d"][:, 21] - gt["joints3d"][:, 0], "joints3d": gt["joints3d"].copy()}
    assert evaluate(pred, gt, protocol, dataset="reih", regressors=regs).summary  # finite: scored
    pred[key][4].flat[2] = np.nan
    with pytest.raises(NonFinitePredictionError, match=rf"'{key}' of 1 sample\(s\): 4$"):
        evaluate(pred, gt, protocol, dataset="reih", regressors=regs)
