"""Metrics: closed-form cases, invariances, and equality with a naive per-sample loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handrecon.metrics import MRRPE_SELECTIONS, bootstrap_ci, evaluate


@pytest.fixture(scope="module")
def regs(hand_model):
    return np.stack([hand_model.joint_regressor(s).double().numpy() for s in ("right", "left")])


def _gt(hand_model, n, seed, hand_types=None):
    gen = torch.Generator().manual_seed(seed)
    meshes = []
    for side in ("right", "left"):
        out = hand_model.hand(
            side,
            betas=torch.randn(n, 10, generator=gen),
            global_orient=torch.randn(n, 3, generator=gen),
            hand_pose=0.3 * torch.randn(n, 45, generator=gen),
            transl=0.2 * torch.randn(n, 3, generator=gen) + torch.tensor([0.0, 0.0, 0.6]),
        )
        meshes.append(out.vertices.double().numpy())
    verts = np.concatenate(meshes, 1)
    rng = np.random.default_rng(seed)
    if hand_types is None:
        hand_types = rng.choice(["right", "left", "interacting"], size=n)
    mesh_valid = np.stack([hand_types != "left", hand_types != "right"], 1)
    verts = verts * np.repeat(mesh_valid, 778, 1)[..., None]
    joints = hand_model.regress_joints(torch.as_tensor(verts, dtype=torch.float32)).double().numpy()
    return {
        "verts": verts,
        "mesh_valid": mesh_valid,
        "joints3d": joints,
        "joints_valid": np.repeat(mesh_valid, 21, 1),
        "hand_type": np.asarray(hand_types),
    }


def test_shared_translation_changes_nothing(hand_model, regs):
    gt = _gt(hand_model, 12, 0)
    pred = {"verts": gt["verts"] + np.array([0.03, -0.2, 0.5])}
    for protocol in ("interwild", "dir"):
        res = evaluate(pred, gt, protocol=protocol, dataset="ih26m", regressors=regs)
        for key, value in res.summary.items():
            assert value == pytest.approx(0.0, abs=1e-4), key


def test_left_hand_shift_gives_known_mrrpe_and_rrve(hand_model, regs):
    gt = _gt(hand_model, 10, 1, hand_types=np.array(["interacting"] * 10))
    d = np.array([0.012, -0.005, 0.02])
    pred = {"verts": gt["verts"].copy()}
    pred["verts"][:, 778:] += d
    res = evaluate(pred, gt, dataset="reih", regressors=regs).summary
    norm_mm = np.linalg.norm(d) * 1000
    assert res["interwild/mpvpe_all_wrist_mm"] == pytest.approx(0.0, abs=1e-4)
    assert res["interwild/mrrpe_mm"] == pytest.approx(norm_mm, rel=1e-6)
    assert res["interwild/rrve_rightwrist_mm"] == pytest.approx(norm_mm / 2, rel=1e-6)  # half the vertices move
    # a separately predicted relative translation replaces the mesh wrists' difference
    res2 = evaluate({**pred, "rel_trans": np.zeros((10, 3))}, gt, dataset="reih", regressors=regs).summary
    rel_gt = np.einsum("v,nvd->nd", regs[1, 0], gt["verts"][:, 778:]) - np.einsum("v,nvd->nd", regs[0, 0], gt["verts"][:, :778])
    assert res2["interwild/mrrpe_mm"] == pytest.approx(np.linalg.norm(rel_gt, axis=1).mean() * 1000)


def test_rotation_about_the_wrist_gives_the_chord_length(hand_model, regs):
    gt = _gt(hand_model, 1, 2, hand_types=np.array(["right"]))
    theta = 0.3
    axis = np.array([0.0, 0.6, 0.8])
    rot = Rotation.from_rotvec(theta * axis).as_matrix()
    v = gt["verts"][0, :778]
    wrist = regs[0, 0] @ v
    pred = gt["verts"].copy()
    pred[0, :778] = (v - wrist) @ rot.T + wrist
    rel = v - wrist
    r_perp = np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
    expected = np.mean(2 * r_perp * np.sin(theta / 2)) * 1000
    res = evaluate({"verts": pred}, gt, dataset="ih26m", regressors=regs)
    assert res.summary["interwild/mpvpe_all_wrist_mm"] == pytest.approx(expected, rel=1e-6)
    assert res.summary["interwild/mpvpe_single_wrist_mm"] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(res.summary["interwild/mpvpe_inter_wrist_mm"])


def _naive(pred, gt, regs, dataset):
    """Definitions written out per sample and per hand."""
    n = len(gt["hand_type"])
    hands_all, hands_single, hands_inter, rrve, mrrpe = [], [], [], [], []
    joint_err = [[] for _ in range(42)]
    for i in range(n):
        pw, gw = [], []
        for h in range(2):
            p = pred["verts"][i, 778 * h : 778 * (h + 1)]
            g = gt["verts"][i, 778 * h : 778 * (h + 1)]
            pw.append(regs[h, 0] @ p)
            gw.append(regs[h, 0] @ g)
            if not gt["mesh_valid"][i, h]:
                continue
            e = np.mean([np.linalg.norm((p[k] - pw[h]) - (g[k] - gw[h])) for k in range(778)]) * 1000
            hands_all.append(e)
            (hands_single if gt["hand_type"][i] in ("right", "left") else hands_inter).append(e)
            pj = regs[h] @ p
            gj = gt["joints3d"][i, 21 * h : 21 * (h + 1)]
            if gt["joints_valid"][i, 21 * h]:
                for j in range(21):
                    if gt["joints_valid"][i, 21 * h + j]:
                        joint_err[21 * h + j].append(np.linalg.norm((pj[j] - pj[0]) - (gj[j] - gj[0])) * 1000)
        if gt["mesh_valid"][i].all():
            rel_p, rel_g = pw[1] - pw[0], gw[1] - gw[0]
            p_all = np.concatenate([pred["verts"][i, :778] - pw[0], pred["verts"][i, 778:] - pw[1] + rel_p])
            g_all = np.concatenate([gt["verts"][i, :778] - gw[0], gt["verts"][i, 778:] - gw[1] + rel_g])
            rrve.append(np.mean(np.linalg.norm(p_all - g_all, axis=1)) * 1000)
            if dataset == "reih" or (dataset == "hic" and gt["hand_type"][i] == "interacting"):
                mrrpe.append(np.linalg.norm(rel_p - rel_g) * 1000)
        if dataset == "ih26m" and gt["joints_valid"][i, 0] and gt["joints_valid"][i, 21]:
            rel_g = gt["joints3d"][i, 21] - gt["joints3d"][i, 0]
            mrrpe.append(np.linalg.norm((pw[1] - pw[0]) - rel_g) * 1000)
    mean = lambda x: float(np.mean(x)) if x else float("nan")  # noqa: E731
    return {
        "interwild/mpvpe_all_wrist_mm": mean(hands_all),
        "interwild/mpvpe_single_wrist_mm": mean(hands_single),
        "interwild/mpvpe_inter_wrist_mm": mean(hands_inter),
        "interwild/rrve_rightwrist_mm": mean(rrve),
        "interwild/mrrpe_mm": mean(mrrpe),
        "interwild/mpjpe_wrist_mm": float(np.mean([np.mean(e) for e in joint_err if e])),
    }


@pytest.mark.parametrize("dataset", sorted(MRRPE_SELECTIONS))
def test_equals_naive_loop(hand_model, regs, dataset):
    gt = _gt(hand_model, 16, 3)
    rng = np.random.default_rng(4)
    gt["joints_valid"] &= rng.random(gt["joints_valid"].shape) > 0.1  # some unannotated joints
    pred = {"verts": gt["verts"] + rng.normal(scale=0.004, size=gt["verts"].shape)}
    got = evaluate(pred, gt, dataset=dataset, regressors=regs).summary
    ref = _naive(pred, gt, regs, dataset)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-4), key


def test_invalid_hands_do_not_count(hand_model, regs):
    gt = _gt(hand_model, 8, 5)
    rng = np.random.default_rng(0)
    pred = {"verts": gt["verts"] + rng.normal(scale=0.003, size=gt["verts"].shape)}
    base = evaluate(pred, gt, dataset="ih26m", regressors=regs).summary
    junk = pred["verts"].copy()
    invalid = np.repeat(~gt["mesh_valid"], 778, 1)
    junk[invalid] += 5.0
    other = evaluate({"verts": junk}, gt, dataset="ih26m", regressors=regs).summary
    for key in base:
        if "mrrpe" in key or "rrve" in key:
            continue  # these need both hands, so single-hand samples never enter them anyway
        assert other[key] == pytest.approx(base[key], nan_ok=True), key


def test_dir_protocol_is_scale_invariant_about_the_middle_mcp(hand_model, regs):
    gt = _gt(hand_model, 6, 6, hand_types=np.array(["interacting"] * 6))
    pred = gt["verts"].copy()
    for h in range(2):
        v = pred[:, 778 * h : 778 * (h + 1)]
        mcp = np.einsum("v,nvd->nd", regs[h, 9], v)[:, None]
        pred[:, 778 * h : 778 * (h + 1)] = mcp + 1.2 * (v - mcp)
    dir_res = evaluate({"verts": pred}, gt, protocol="dir", dataset="reih", regressors=regs).summary
    assert dir_res["dir/mpvpe_all_mcp_scaled_mm"] == pytest.approx(0.0, abs=1e-4)
    assert dir_res["dir/mpjpe_mcp_scaled_mm"] == pytest.approx(0.0, abs=1e-4)
    iw = evaluate({"verts": pred}, gt, protocol="interwild", dataset="reih", regressors=regs).summary
    assert iw["interwild/mpvpe_all_wrist_mm"] > 5.0


def test_bootstrap_is_deterministic_and_brackets_the_estimate(hand_model, regs):
    gt = _gt(hand_model, 40, 7)
    rng = np.random.default_rng(1)
    pred = {"verts": gt["verts"] + rng.normal(scale=0.005, size=gt["verts"].shape)}
    res = evaluate(pred, gt, dataset="ih26m", regressors=regs)
    ci = bootstrap_ci(res, n=300, seed=0)
    assert ci == bootstrap_ci(res, n=300, seed=0)
    key = "interwild/mpvpe_all_wrist_mm"
    lo, hi = ci[key]
    assert lo < res.summary[key] < hi
    small = evaluate({"verts": pred["verts"][:10]}, {k: v[:10] for k, v in gt.items()}, dataset="ih26m", regressors=regs)
    lo_s, hi_s = bootstrap_ci(small, n=300, seed=0)[key]
    assert hi - lo < hi_s - lo_s  # more samples, narrower interval
