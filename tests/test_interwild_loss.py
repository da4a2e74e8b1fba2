"""interwild's default loss rules against a naive numpy transcription of InterWild's formulas
(main/model.py, common/nets/loss.py): |a - b| * valid, then `.mean()` over every entry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handrecon.models import create_model

B, J = 3, 21


def _rodrigues(aa):
    """(..., 3) axis-angle -> (..., 3, 3)."""
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)[..., None]
    k = aa / np.maximum(np.linalg.norm(aa, axis=-1, keepdims=True), 1e-12)
    kx = np.zeros(aa.shape[:-1] + (3, 3))
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    kx[..., 1, 0], kx[..., 2, 0], kx[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def _case(hand_model):
    g = torch.Generator().manual_seed(0)
    r = lambda *s, scale=1.0: torch.rand(*s, generator=g) * scale  # noqa: E731
    model = create_model("interwild_tiny", hand_model, loss_rules="interwild")
    h, w = model.input_size
    boxes = torch.tensor([[20.0, 30, 60, 70], [40, 50, 80, 90]]).expand(B, 2, 4).clone()
    boxes[1, 1] = 0  # no left box in sample 1
    roi = boxes.clone()
    roi[1, 1] = torch.tensor([30.0, 40, 70, 80])
    joints3d = torch.cat([r(B, 2 * J, 2, scale=0.1) - 0.05, 0.5 + r(B, 2 * J, 1, scale=0.1)], -1)
    batch = {
        "boxes": boxes,
        "joints3d": joints3d,
        "joints_valid": r(B, 2 * J) > 0.3,
        "verts": torch.cat([r(B, 1556, 2, scale=0.1) - 0.05, 0.5 + r(B, 1556, 1, scale=0.1)], -1),
        "mesh_valid": torch.tensor([[True, False], [True, True], [False, True]]),
        "mano_pose": r(B, 2, 48) - 0.5,
        "mano_shape": r(B, 2, 10) - 0.5,
        "mano_valid": torch.tensor([[True, True], [False, True], [True, False]]),
        "joints2d": r(B, 2 * J, 2, scale=100.0),  # many fall outside their crop: truncated
        "focal": torch.full((B, 2), 300.0),
        "princpt": torch.tensor([w / 2, h / 2]).expand(B, 2).clone(),
    }
    batch["joints2d_valid"] = batch["joints_valid"] | (r(B, 2 * J) > 0.5)
    cells = model.heatmap_cells
    verts = batch["verts"] + r(B, 1556, 3, scale=0.02)
    out = {
        "verts": verts,
        "joints3d": hand_model.regress_joints(verts),  # as the model's output
        "mano_pose": batch["mano_pose"] + r(B, 2, 48, scale=0.3),
        "mano_shape": r(B, 2, 10),
        "rel_trans": r(B, 3),
        "box_centre": r(B, 2, 2),
        "box_size": r(B, 2, 2, scale=0.5),
        "roi": roi,
        "joint_img": r(B, 2, J, 3, scale=float(cells)),
        "joint_proj": r(B, 2, J, 2, scale=float(cells)),
    }
    return model, out, batch


def _np(d):
    return {k: v.numpy() if v.dtype == torch.bool else v.double().numpy() for k, v in d.items()}


def _crop_cells(p, roi, size, cells):
    """(B, 2, 21, 2) pixels -> heatmap cells of each crop, and in-heatmap (x, y in [0, cells))."""
    centre = (roi[..., None, :2] + roi[..., None, 2:]) / 2
    side = roi[..., None, 2:] - roi[..., None, :2] + 1e-8
    c = ((p - centre) * size / side + size / 2) * cells / size
    return c, ((c >= 0) & (c < cells)).all(-1)


def test_interwild_loss_terms_match_the_original_formulas(hand_model):
    model, out, batch = _case(hand_model)
    terms = {k: float(v) for k, v in model.losses(out, batch).items()}
    o, b = _np(out), _np(batch)
    cfg, wts = model.cfg, model.loss_weights
    ref = {}

    # mano_pose: L1 on rotation matrices of all 32 joints, zeroed where the hand has no MANO fit
    pose = np.abs(_rodrigues(o["mano_pose"].reshape(B, 2, 16, 3)) - _rodrigues(b["mano_pose"].reshape(B, 2, 16, 3)))
    ref["mano_pose"] = (pose * b["mano_valid"][:, :, None, None, None]).mean()
    ref["mano_shape"] = (np.abs(o["mano_shape"] - b["mano_shape"]) * b["mano_valid"][..., None]).mean()

    # rel_trans: left wrist - right wrist, valid when both wrists are
    gt_rel = b["joints3d"][:, J] - b["joints3d"][:, 0]
    rel_valid = b["joints_valid"][:, 0] * b["joints_valid"][:, J]
    ref["rel_trans"] = (np.abs(o["rel_trans"] - gt_rel) * rel_valid[:, None]).mean()

    # joint_cam x10: root-relative joints, valid where the joint and its wrist are
    def rel(x):
        x = x.reshape(B, 2, J, 3)
        return x - x[:, :, :1]

    jv = b["joints_valid"].reshape(B, 2, J) * b["joints_valid"].reshape(B, 2, J)[:, :, :1]
    ref["joints"] = (np.abs(rel(o["joints3d"]) - rel(b["joints3d"])) * jv[..., None]).mean()

    # mano_mesh_cam x10: vertices relative to the wrist regressed from the same mesh
    def verts_rel(v):
        wrist = hand_model.regress_joints(torch.from_numpy(v).float()).double().numpy().reshape(B, 2, J, 3)[:, :, 0]
        return v.reshape(B, 2, 778, 3) - wrist[:, :, None]

    ref["verts"] = (np.abs(verts_rel(o["verts"]) - verts_rel(b["verts"])) * b["mesh_valid"][..., None, None]).mean()

    # boxes: one term per hand, each a mean over (B, 2), in box-heatmap cells
    h, w = model.input_size
    cells = np.array([cfg.body_size[1], cfg.body_size[0]]) / 2.0 ** (5 - cfg.box_deconvs)
    bx = b["boxes"]
    has = (bx[..., 2] > bx[..., 0]) & (bx[..., 3] > bx[..., 1])
    gt_c = (bx[..., :2] + bx[..., 2:]) / 2 / [w, h]
    gt_s = (bx[..., 2:] - bx[..., :2]) / [w, h]
    for name, pred, gt in (("box_centre", o["box_centre"], gt_c), ("box_size", o["box_size"], gt_s)):
        ref[name] = sum((np.abs(pred[:, i] - gt[:, i]) * cells * has[:, i, None]).mean() for i in range(2))

    # joint_img / joint_proj: masked by the 2D label's validity and the in-crop truncation
    hm, size = model.heatmap_cells, cfg.hand_size
    gt_cells, inside = _crop_cells(b["joints2d"].reshape(B, 2, J, 2), o["roi"], size, hm)
    trunc = b["joints2d_valid"].reshape(B, 2, J) & inside
    assert 0 < trunc.sum() < trunc.size and (b["joints2d_valid"].reshape(B, 2, J) & ~inside).any()
    ref["joint_proj"] = (np.abs(o["joint_proj"] - gt_cells) * trunc[..., None]).mean()
    gt_z = (rel(b["joints3d"])[..., 2] / cfg.depth_range + 0.5) * cfg.heatmap_depth
    e = np.abs(o["joint_img"] - np.concatenate([gt_cells, gt_z[..., None]], -1)) * trunc[..., None]
    e[..., 2] *= jv
    ref["joint_img"] = e.mean()

    # mano_joint_img: the position net against the ground-truth MANO fit's joints
    mj = hand_model.regress_joints(batch["verts"]).double().numpy()
    mj2d = mj[..., :2] / mj[..., 2:] * b["focal"][:, None] + b["princpt"][:, None]
    m_cells, m_inside = _crop_cells(mj2d.reshape(B, 2, J, 2), o["roi"], size, hm)
    m_z = (rel(mj)[..., 2] / cfg.depth_range + 0.5) * cfg.heatmap_depth
    m_trunc = b["mesh_valid"][..., None] & m_inside
    ref["mano_joint_img"] = (np.abs(o["joint_img"] - np.concatenate([m_cells, m_z[..., None]], -1)) * m_trunc[..., None]).mean()

    expected = {k: v * wts[k] for k, v in ref.items() if wts[k]}
    assert set(terms) == set(expected)
    for k in expected:
        assert terms[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-7), k


def test_interwild_default_weights_are_the_originals(hand_model):
    model = create_model("interwild", hand_model, backbone="resnet_tiny", body_backbone="resnet_tiny", trans_backbone="resnet_tiny")
    assert model.cfg.loss_rules == "interwild"
    w = model.loss_weights
    assert (w["joints"], w["verts"], w["mesh_joints"], w["mano_joint_img"], w["mano_pose"]) == (10.0, 10.0, 0.0, 1.0, 1.0)
    tiny = create_model("interwild_tiny", hand_model)
    assert tiny.cfg.loss_rules == "masked_mean" and tiny.loss_weights["verts"] == 0.0 and tiny.loss_weights["mesh_joints"] == 10.0


def test_missing_pretrained_file_names_the_expected_weights(hand_model, tmp_path):
    from handrecon.errors import UserError

    missing = tmp_path / "resnet50-0676ba61.pth"
    with pytest.raises(UserError, match=r"backbone 'resnet50' not found at .*resnet50-0676ba61\.pth: save torchvision's resnet50-0676ba61\.pth or timm's 'resnet50'"):
        create_model("interwild", hand_model, pretrained=str(missing))
    with pytest.raises(UserError, match=r"save torchvision's resnet18-f37072fd\.pth"):
        create_model("interwild", hand_model, backbone="resnet_tiny", body_backbone="resnet_tiny", trans_pretrained=str(tmp_path / "x.pth"))
