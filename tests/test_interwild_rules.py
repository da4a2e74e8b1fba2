"""The `interwild` protocol against a re-implementation of InterWild's evaluate() arithmetic.

facebookresearch/InterWild, data/{HIC/HIC.py, InterHand26M/InterHand26M.py}, `evaluate` and
`print_eval_result`. The reference below is written from those rules, one sample at a time, in
millimetres, with no code of `handrecon.metrics`: per hand the mesh minus its own regressed
wrist; MRRPE = ||rel_gt - rel_out||; RRVE: the left hand (wrist-aligned) plus rel, mean over all
1556 vertices; MPJPE: per joint the mean over the samples where the joint is valid, then the mean
of the per-joint means. Every case prints ours beside the reference and asserts them equal.
"""
from __future__ import annotations

import numpy as np
import pytest
from hand_cases import random_hand_meshes

from handrecon.data.readers import list_datasets
from handrecon.metrics import evaluate

list_datasets()  # every dataset's rules registered
NV, NJ = 778, 21


@pytest.fixture(scope="module")
def regs(hand_model):
    return np.stack([hand_model.joint_regressor(s).double().numpy() for s in ("right", "left")])


# --- the reference: InterWild's evaluate() rules, in mm ---------------------------------------
def _wrist_aligned(mesh_mm, reg):
    return mesh_mm - (reg @ mesh_mm)[0]


def _ref_hic(pred_mesh, pred_rel, gt_mesh, hand_type, has_mesh, regs):
    """HIC.py: a missing mesh is a zero mesh (load_ply is skipped, zeros instead); MRRPE for every
    interacting sample with rel_gt = left regressed wrist - right regressed wrist."""
    mrrpe, rrve, sh, ih = [], [], [], []
    for i in range(len(hand_type)):
        gt = [gt_mesh[i, h * NV : (h + 1) * NV] * 1000 if has_mesh[i][h] else np.zeros((NV, 3)) for h in range(2)]
        out = [pred_mesh[i, h * NV : (h + 1) * NV] * 1000 for h in range(2)]
        rel_gt = (regs[1] @ gt[1])[0] - (regs[0] @ gt[0])[0]
        rel_out = pred_rel[i] * 1000
        if hand_type[i] == "interacting":
            mrrpe.append(np.sqrt(np.sum((rel_gt - rel_out) ** 2)))
        gt = [_wrist_aligned(gt[h], regs[h]) for h in range(2)]
        out = [_wrist_aligned(out[h], regs[h]) for h in range(2)]
        err = [np.sqrt(np.sum((gt[h] - out[h]) ** 2, 1)).mean() for h in range(2)]
        if hand_type[i] in ("right", "left"):
            h = 0 if hand_type[i] == "right" else 1
            if has_mesh[i][h]:
                sh.append(err[h])
        else:
            ih += [err[h] for h in range(2) if has_mesh[i][h]]
            if all(has_mesh[i]):
                g = np.concatenate([gt[0], gt[1] + rel_gt])
                o = np.concatenate([out[0], out[1] + rel_out])
                rrve.append(np.sqrt(np.sum((g - o) ** 2, 1)).mean())
    return {"mrrpe": np.mean(mrrpe), "rrve": np.mean(rrve), "mpvpe_all": np.mean(sh + ih)}


def _ref_ih26m(pred_mesh, pred_joints, pred_rel, gt_mesh, has_fit, joint_gt, joint_trunc, hand_type, regs):
    """InterHand26M.py: joint validity is joint_trunc alone (the annotation, whatever the
    hand_type); MRRPE when both wrists are in joint_trunc; RRVE for interacting samples with
    both MANO fits, rel_gt from the annotated wrists with no check."""
    mrrpe, rrve, sh, ih = [], [], [], []
    jsh, jih = [[] for _ in range(2 * NJ)], [[] for _ in range(2 * NJ)]
    for i in range(len(hand_type)):
        jg, jo = joint_gt[i] * 1000, pred_joints[i] * 1000
        valid = joint_trunc[i]
        rel_gt = jg[NJ] - jg[0]
        rel_out = pred_rel[i] * 1000
        if valid[0] * valid[NJ]:
            mrrpe.append(np.sqrt(np.sum((rel_gt - rel_out) ** 2)))
        gt = [_wrist_aligned(gt_mesh[i, h * NV : (h + 1) * NV] * 1000, regs[h]) for h in range(2)]
        out = [_wrist_aligned(pred_mesh[i, h * NV : (h + 1) * NV] * 1000, regs[h]) for h in range(2)]
        for h in range(2):
            jg[h * NJ : (h + 1) * NJ] -= jg[h * NJ].copy()
            jo[h * NJ : (h + 1) * NJ] -= jo[h * NJ].copy()
        for j in range(2 * NJ):
            if valid[j]:
                (jsh if hand_type[i] in ("right", "left") else jih)[j].append(np.sqrt(np.sum((jo[j] - jg[j]) ** 2)))
        err = [np.sqrt(np.sum((gt[h] - out[h]) ** 2, 1)).mean() for h in range(2)]
        if hand_type[i] == "right" and has_fit[i][0]:
            sh.append(err[0])
        elif hand_type[i] == "left" and has_fit[i][1]:
            sh.append(err[1])
        elif hand_type[i] == "interacting":
            ih += [err[h] for h in range(2) if has_fit[i][h]]
            if all(has_fit[i]):
                g = np.concatenate([gt[0], gt[1] + rel_gt])
                o = np.concatenate([out[0], out[1] + rel_out])
                rrve.append(np.sqrt(np.sum((g - o) ** 2, 1)).mean())
    per_sh, per_ih = [np.mean(x) for x in jsh], [np.mean(x) for x in jih]  # np.mean([]) is NaN, as InterWild's
    return {
        "mrrpe": np.mean(mrrpe) if mrrpe else np.nan,
        "rrve": np.mean(rrve) if rrve else np.nan,
        "mpvpe_all": np.mean(sh + ih),
        "mpjpe_sh": per_sh,
        "mpjpe_ih": per_ih,
    }


def _show(case, pairs):
    for name, ours, ref in pairs:
        print(f"[{case}] {name}: ours {ours:.6f} mm | InterWild re-implementation {ref:.6f} mm")
    for name, ours, ref in pairs:
        assert ours == pytest.approx(ref, abs=1e-6), (case, name)


# --- (a) HIC: an interacting sample with a missing left mesh ---------------------------------
def test_hic_mrrpe_counts_an_interacting_sample_with_a_missing_mesh(hand_model, regs):
    n = 3
    mesh = random_hand_meshes(hand_model, n, 1)
    rng = np.random.default_rng(1)
    hand_type = np.array(["interacting", "interacting", "right"])
    has_mesh = np.array([[True, True], [True, False], [True, False]])  # sample 1: interacting, no left mesh
    gt_verts = mesh * np.repeat(has_mesh, NV, 1)[..., None]
    pred = {"verts": mesh + rng.normal(scale=0.004, size=mesh.shape), "rel_trans": rng.normal(scale=0.1, size=(n, 3))}
    joints = np.einsum("hjv,nhvd->nhjd", regs, gt_verts.reshape(n, 2, NV, 3)).reshape(n, 2 * NJ, 3)
    gt = {"verts": gt_verts, "mesh_valid": has_mesh, "joints3d": joints, "joints_valid": np.repeat(has_mesh, NJ, 1), "hand_type": hand_type}
    ours = evaluate(pred, gt, dataset="hic", regressors=regs)
    ref = _ref_hic(pred["verts"], pred["rel_trans"], mesh, hand_type, has_mesh, regs)
    assert np.isfinite(ours.per_sample["interwild/mrrpe_mm"]).tolist() == [True, True, False]  # the zero-mesh sample counts
    s = ours.summary
    _show("hic, missing left mesh", [
        ("MRRPE", s["interwild/mrrpe_mm"], ref["mrrpe"]),
        ("RRVE", s["interwild/rrve_rightwrist_mm"], ref["rrve"]),
        ("MPVPE all", s["interwild/mpvpe_all_wrist_mm"], ref["mpvpe_all"]),
    ])  # fmt: skip
    strict = evaluate(pred, gt, protocol="interwild_strict", dataset="hic", regressors=regs)
    assert np.isfinite(strict.per_sample["interwild_strict/mrrpe_mm"]).tolist() == [True, False, False]  # the old rule


# --- (b), (c), (d) InterHand2.6M ---------------------------------------------------------------
def _ih26m_case(hand_model, regs):
    """0: 'right' sample whose left hand is annotated valid too (outside hand_type);
    1: 'left' sample, right hand annotated, its right 3D wrist missing (placeholder 1 mm);
    2: interacting, both fits, both annotated wrists invalid (RRVE counts it, MRRPE not);
    3: interacting, both fits, left wrist invalid; 4: interacting, both fits, all valid;
    5: interacting, right fit only."""
    n = 6
    mesh = random_hand_meshes(hand_model, n, 2)
    rng = np.random.default_rng(2)
    hand_type = np.array(["right", "left", "interacting", "interacting", "interacting", "interacting"])
    has_fit = np.array([[True, True], [False, True], [True, True], [True, True], [True, True], [True, False]])
    joints = np.einsum("hjv,nhvd->nhjd", regs, mesh.reshape(n, 2, NV, 3)).reshape(n, 2 * NJ, 3)
    joints = joints + rng.normal(scale=0.002, size=joints.shape)  # annotations differ from the fits
    trunc = rng.random((n, 2 * NJ)) > 0.2
    trunc[[0, 1, 4]] = True  # every joint valid in some single-hand and some interacting sample
    trunc[:, [0, NJ]] = True
    trunc[2, [0, NJ]] = False
    trunc[3, NJ] = False
    for h in range(2):  # InterWild: a hand's joints times its wrist flag
        trunc[:, h * NJ : (h + 1) * NJ] &= trunc[:, [h * NJ]]
    annot = joints.copy()
    annot[1, :NJ] = 0.001  # no 3D right wrist: InterWild's placeholder, 1 mm on every axis
    labels_valid = trunc & np.repeat(np.stack([hand_type != "left", hand_type != "right"], 1), NJ, 1)  # the strict labels
    labels_valid[1, :NJ] = False
    gt = {
        "verts": mesh * np.repeat(has_fit, NV, 1)[..., None],
        "mesh_valid": has_fit,
        "joints3d": np.where(labels_valid[..., None], joints, 0.0),
        "joints_valid": labels_valid,
        "hand_type": hand_type,
        "annot_joints3d": annot,
        "annot_joints_valid": trunc,
    }
    pred = {
        "verts": mesh + rng.normal(scale=0.004, size=mesh.shape),
        "rel_trans": rng.normal(scale=0.1, size=(n, 3)),
        "joints3d": joints + rng.normal(scale=0.005, size=joints.shape),
    }
    ref = _ref_ih26m(pred["verts"], pred["joints3d"], pred["rel_trans"], mesh, has_fit, annot, trunc, hand_type, regs)
    return gt, pred, ref


def test_ih26m_joint_validity_is_the_annotations(hand_model, regs):
    """(b) a single-hand sample with a valid other-hand annotation; (c) hands outside hand_type:
    their annotated joints count in MPJPE (single-hand), their fits do not count in MPVPE."""
    gt, pred, ref = _ih26m_case(hand_model, regs)
    ours = evaluate(pred, gt, dataset="ih26m", regressors=regs)
    s = ours.summary
    _show("ih26m, joint validity = annotation", [
        ("MPJPE single", s["interwild/mpjpe_single_wrist_mm"], np.mean(ref["mpjpe_sh"])),
        ("MPJPE interacting", s["interwild/mpjpe_inter_wrist_mm"], np.mean(ref["mpjpe_ih"])),
        ("MPJPE all", s["interwild/mpjpe_all_wrist_mm"], np.mean(ref["mpjpe_sh"] + ref["mpjpe_ih"])),
        ("MPVPE all (hand_type hands with a fit)", s["interwild/mpvpe_all_wrist_mm"], ref["mpvpe_all"]),
    ])  # fmt: skip
    assert np.isfinite(ours.per_sample["interwild/mpjpe_wrist_mm"][:2]).all()
    # (c) the hand outside hand_type: sample 0's left joints move the single-hand MPJPE, its left
    # fit does not move MPVPE
    moved = {k: v.copy() for k, v in pred.items()}
    moved["joints3d"][0, NJ + 1 :] += 0.05
    moved["verts"][0, NV:] += np.random.default_rng(3).normal(scale=0.05, size=(NV, 3))
    again = evaluate(moved, gt, dataset="ih26m", regressors=regs).summary
    ref2 = _ref_ih26m(moved["verts"], moved["joints3d"], moved["rel_trans"], gt["verts"], gt["mesh_valid"],
                      gt["annot_joints3d"], gt["annot_joints_valid"], gt["hand_type"], regs)  # fmt: skip
    _show("ih26m, hand outside hand_type moved", [
        ("MPJPE single", again["interwild/mpjpe_single_wrist_mm"], np.mean(ref2["mpjpe_sh"])),
        ("MPVPE all", again["interwild/mpvpe_all_wrist_mm"], ref2["mpvpe_all"]),
    ])  # fmt: skip
    assert again["interwild/mpjpe_single_wrist_mm"] != pytest.approx(s["interwild/mpjpe_single_wrist_mm"], abs=1e-3)
    assert again["interwild/mpvpe_all_wrist_mm"] == pytest.approx(s["interwild/mpvpe_all_wrist_mm"], abs=1e-9)
    strict = evaluate(moved, gt, protocol="interwild_strict", dataset="ih26m", regressors=regs).summary
    base_strict = evaluate(pred, gt, protocol="interwild_strict", dataset="ih26m", regressors=regs).summary
    assert strict["interwild_strict/mpjpe_single_wrist_mm"] == pytest.approx(base_strict["interwild_strict/mpjpe_single_wrist_mm"], abs=1e-9)


def test_ih26m_rrve_needs_both_fits_not_wrists(hand_model, regs):
    """(d) RRVE on interacting samples with both fits, whatever the wrists' validity; MRRPE only
    where both wrists are annotated."""
    gt, pred, ref = _ih26m_case(hand_model, regs)
    ours = evaluate(pred, gt, dataset="ih26m", regressors=regs)
    assert np.isfinite(ours.per_sample["interwild/rrve_rightwrist_mm"]).tolist() == [False, False, True, True, True, False]
    assert np.isfinite(ours.per_sample["interwild/mrrpe_mm"]).tolist() == [True, True, False, False, True, True]
    s = ours.summary
    _show("ih26m, RRVE with invalid wrists", [
        ("RRVE", s["interwild/rrve_rightwrist_mm"], ref["rrve"]),
        ("MRRPE", s["interwild/mrrpe_mm"], ref["mrrpe"]),
    ])  # fmt: skip
    strict = evaluate(pred, gt, protocol="interwild_strict", dataset="ih26m", regressors=regs)
    assert np.isfinite(strict.per_sample["interwild_strict/rrve_rightwrist_mm"]).tolist() == [False, False, False, False, True, False]
