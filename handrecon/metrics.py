"""Reconstruction metrics, vectorised over samples: the InterWild protocol and the DIR protocol.

Inputs are metres, outputs millimetres. Meshes are (N, 1556, 3), right hand first; each hand's
joints are regressed from its own mesh with the (21, 778) regressor of `HandModel` (wrist =
joint 0, middle-finger MCP = joint 9).

InterWild protocol (`interwild/...`), keys name the alignment before the unit:
- `mpvpe_{all,single,inter}_wrist_mm`: per-vertex error after aligning each hand at its own
  wrist (prediction at the predicted wrist, ground truth at the ground-truth wrist), no scale,
  no rotation. `all` = mean over every hand with a ground-truth mesh; `single` = hands of
  one-hand samples; `inter` = hands of interacting samples.
- `rrve_rightwrist_mm`: both hands placed relative to the right wrist, the left one by its
  relative translation (ground truth for ground truth, prediction for prediction), mean over
  all 1556 vertices; samples with both ground-truth meshes.
- `mrrpe_mm`: || rel_pred - rel_gt ||, rel = left wrist - right wrist; rel_pred from the
  predicted meshes unless a separate prediction is given. Which samples count and where the
  ground-truth wrists come from depends on the dataset (`MRRPE_SELECTIONS`): InterHand2.6M uses
  annotated joints with both wrists valid, HIC interacting samples with both meshes, Re:InterHand
  every sample with both meshes.
- `mpjpe_wrist_mm`: joints regressed from the predicted mesh vs the annotated joints, each hand
  aligned at its wrist; mean over the 42 joints of each joint's mean over the samples where it
  is valid (the InterHand2.6M protocol).

DIR / IntagHand protocol (`dir/...`): each hand aligned at its middle-finger MCP and the
prediction scaled so its wrist-to-middle-MCP bone has the ground-truth length; `mpvpe_all`,
`mpjpe` and `mrrpe` as above with that alignment. Numbers of the two protocols are not
comparable; keys never mix them.

Every summary value is a ratio of per-sample sums (`EvalResult.parts`), so a bootstrap over
samples recomputes it exactly with weights (`bootstrap_ci`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

MM = 1000.0
NV = 778
WRIST, MIDDLE_MCP = 0, 9


@dataclass
class EvalResult:
    """summary: metric key -> value; per_sample: key -> (N,) values (NaN where undefined);
    ranking: (N,) per-sample error used to pick best/worst samples; parts: key -> (num (N,) or
    (N, J), count (same)) whose weighted sums give the summary (per-joint means for MPJPE)."""

    summary: dict[str, float]
    per_sample: dict[str, np.ndarray]
    ranking: np.ndarray
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    per_joint: frozenset[str] = frozenset()  # keys whose parts are (N, J): mean of per-joint means


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)


def _hands(verts: np.ndarray) -> np.ndarray:
    """(N, 1556, 3) -> (N, 2, 778, 3)."""
    return verts.reshape(verts.shape[0], 2, NV, 3)


def regress(verts: np.ndarray, regressors: np.ndarray) -> np.ndarray:
    """(N, 1556, 3) meshes, (2, 21, 778) regressors -> (N, 2, 21, 3) joints."""
    return np.matmul(regressors[None], _hands(verts))


def _norm(x):
    """Euclidean norm over the last axis; torch tensors keep both cores busy on big arrays."""
    return torch.linalg.vector_norm(x, dim=-1)


CHUNK = 256  # samples per pass over the (N, 1556, 3) arrays: bounded memory, cache-friendly


def _mesh_errors(pv, gv, pj, gj, rel_pred, root: int, scaled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-hand aligned vertex error (N, 2) and, unscaled only, RRVE (N,), both in mm.

    Works from one difference array per chunk: aligned error = |(P - G) - (p_root - g_root)|,
    and the RRVE offset of each hand follows from the wrists and relative translations.
    """
    n = len(pv)
    hand_err, rrve = torch.zeros(n, 2, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    pv, gv, pj, gj = (torch.from_numpy(np.ascontiguousarray(x)) for x in (pv, gv, pj, gj))
    rel_pred = torch.from_numpy(np.ascontiguousarray(rel_pred))
    rel_gt = gj[:, 1, WRIST] - gj[:, 0, WRIST]
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        P, G = pv[a:b].view(-1, 2, NV, 3), gv[a:b].view(-1, 2, NV, 3)
        if scaled:
            pred_al = torch.from_numpy(_scale_to((P - pj[a:b, :, root : root + 1]).numpy(), pj[a:b].numpy(), gj[a:b].numpy(), root))
            hand_err[a:b] = _norm(pred_al - (G - gj[a:b, :, root : root + 1])).mean(-1) * MM
            continue
        diff = P - G
        offset = pj[a:b, :, root] - gj[a:b, :, root]  # (n, 2, 3)
        hand_err[a:b] = _norm(diff - offset[:, :, None]).mean(-1) * MM
        # RRVE: right hand at the right wrist; left at the right wrist + relative translation
        off_right = pj[a:b, 0, WRIST] - gj[a:b, 0, WRIST]
        off_left = (pj[a:b, 1, WRIST] - gj[a:b, 1, WRIST]) - (rel_pred[a:b] - rel_gt[a:b])
        rrve[a:b] = _norm(diff - torch.stack([off_right, off_left], 1)[:, :, None]).mean((-1, -2)) * MM
    hand_err, rrve = hand_err.numpy(), rrve.numpy()
    return hand_err, rrve


# --- MRRPE sample selections ------------------------------------------------------------------
def _mesh_wrists(gt: dict, joints_gt: np.ndarray) -> np.ndarray:
    return joints_gt[:, :, WRIST]


def _select_ih26m(gt: dict, joints_gt_mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    valid = np.asarray(gt["joints_valid"], bool)
    joints = _np(gt["joints3d"]).reshape(-1, 2, 21, 3)
    return valid[:, WRIST] & valid[:, 21 + WRIST], joints[:, :, WRIST]


def _select_hic(gt: dict, joints_gt_mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.asarray(gt["mesh_valid"], bool).all(1)
    return both & (np.asarray(gt["hand_type"]) == "interacting"), _mesh_wrists(gt, joints_gt_mesh)


def _select_reih(gt: dict, joints_gt_mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(gt["mesh_valid"], bool).all(1), _mesh_wrists(gt, joints_gt_mesh)


# dataset -> (gt dict, gt mesh joints (N,2,21,3)) -> (mask (N,), gt wrists (N, 2, 3))
MRRPE_SELECTIONS: dict[str, Callable[[dict, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "ih26m": _select_ih26m,
    "hic": _select_hic,
    "reih": _select_reih,
}


# --- building blocks ----------------------------------------------------------------------------
def _ratio(num: np.ndarray, count: np.ndarray) -> float:
    total = count.sum()
    return float(num.sum() / total) if total > 0 else float("nan")


def _per_sample(num: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, num / np.maximum(count, 1), np.nan)


def _joint_error_parts(pred_j: np.ndarray, gt_j: np.ndarray, joint_valid: np.ndarray, root: int) -> tuple[np.ndarray, np.ndarray]:
    """Root-aligned joint errors (N, 42) in mm and their validity (root must be valid too)."""
    ok = joint_valid.reshape(-1, 2, 21) & joint_valid.reshape(-1, 2, 21)[:, :, root : root + 1]
    err = np.linalg.norm((pred_j - pred_j[:, :, root : root + 1]) - (gt_j - gt_j[:, :, root : root + 1]), axis=-1) * MM
    return np.where(ok, err, 0.0).reshape(-1, 42), ok.reshape(-1, 42).astype(np.float64)


def _scale_to(pred_al: np.ndarray, pred_j: np.ndarray, gt_j: np.ndarray, root: int) -> np.ndarray:
    """Scale root-aligned predictions so the wrist-root bone matches the ground truth's length."""
    bone_p = np.linalg.norm(pred_j[:, :, WRIST] - pred_j[:, :, root], axis=-1)
    bone_g = np.linalg.norm(gt_j[:, :, WRIST] - gt_j[:, :, root], axis=-1)
    scale = np.where(bone_p > 1e-9, bone_g / np.maximum(bone_p, 1e-9), 1.0)
    return pred_al * scale[:, :, None, None]


def _summarise(prefix: str, parts: dict, per_joint: frozenset) -> dict[str, float]:
    out = {}
    for key, (num, count) in parts.items():
        if key in per_joint:
            with np.errstate(invalid="ignore", divide="ignore"):
                means = num.sum(0) / count.sum(0)
            out[f"{prefix}/{key}"] = float(np.nanmean(means)) if np.isfinite(means).any() else float("nan")
        else:
            out[f"{prefix}/{key}"] = _ratio(num, count)
    return out


# --- protocols -----------------------------------------------------------------------------------
def _interwild(pred: dict, gt: dict, dataset: str, regressors: np.ndarray) -> EvalResult:
    return _evaluate_aligned(pred, gt, dataset, regressors, root=WRIST, scaled=False, prefix="interwild", tag="wrist")


def _dir(pred: dict, gt: dict, dataset: str, regressors: np.ndarray) -> EvalResult:
    return _evaluate_aligned(pred, gt, dataset, regressors, root=MIDDLE_MCP, scaled=True, prefix="dir", tag="mcp_scaled")


def _evaluate_aligned(pred, gt, dataset, regressors, root: int, scaled: bool, prefix: str, tag: str) -> EvalResult:
    if dataset not in MRRPE_SELECTIONS:
        raise ValueError(f"unknown dataset {dataset!r} for MRRPE selection; choose one of {sorted(MRRPE_SELECTIONS)}")
    pv, gv = _np(pred["verts"]), _np(gt["verts"])
    if pv.shape != gv.shape or pv.shape[1:] != (2 * NV, 3):
        raise ValueError(f"pred and gt verts must both be (N, {2 * NV}, 3), got {pv.shape} and {gv.shape}")
    mesh_valid = np.asarray(gt["mesh_valid"], bool)
    hand_type = np.asarray(gt["hand_type"])
    pj, gj = regress(pv, regressors), regress(gv, regressors)  # (N, 2, 21, 3)
    pj_al = pj - pj[:, :, root : root + 1]
    if scaled:
        pj_al = _scale_to(pj_al, pj, gj, root)
    # relative translation: left wrist - right wrist
    rel_pred = _np(pred["rel_trans"]) if "rel_trans" in pred else pj[:, 1, WRIST] - pj[:, 0, WRIST]
    hand_err, rrve = _mesh_errors(pv, gv, pj, gj, rel_pred, root, scaled)
    hand_err = np.where(mesh_valid, hand_err, 0.0)

    single = np.isin(hand_type, ("right", "left"))[:, None]
    inter = (hand_type == "interacting")[:, None]
    vc = mesh_valid.astype(np.float64)
    parts = {f"mpvpe_all_{tag}_mm": (hand_err.sum(1), vc.sum(1))}
    if not scaled:
        parts[f"mpvpe_single_{tag}_mm"] = ((hand_err * single).sum(1), (vc * single).sum(1))
        parts[f"mpvpe_inter_{tag}_mm"] = ((hand_err * inter).sum(1), (vc * inter).sum(1))
        both = mesh_valid.all(1)
        parts[f"rrve_right{tag}_mm"] = (np.where(both, rrve, 0.0), both.astype(np.float64))
    select, gt_wrists = MRRPE_SELECTIONS[dataset](gt, gj)
    mrrpe = np.linalg.norm(rel_pred - (gt_wrists[:, 1] - gt_wrists[:, 0]), axis=-1) * MM
    parts["mrrpe_mm"] = (np.where(select, mrrpe, 0.0), select.astype(np.float64))

    # joints: regressed from the predicted mesh vs annotated ground truth
    gt_joints = _np(gt["joints3d"]).reshape(-1, 2, 21, 3)
    gt_joints_al = gt_joints - gt_joints[:, :, root : root + 1]
    jerr, jok = _joint_error_parts(pj_al, gt_joints_al, np.asarray(gt["joints_valid"], bool), root=root)
    parts[f"mpjpe_{tag}_mm"] = (jerr, jok)
    per_joint = frozenset({f"mpjpe_{tag}_mm"})

    per_sample = {
        f"mpvpe_right_{tag}_mm": np.where(mesh_valid[:, 0], hand_err[:, 0], np.nan),
        f"mpvpe_left_{tag}_mm": np.where(mesh_valid[:, 1], hand_err[:, 1], np.nan),
        f"mpvpe_{tag}_mm": _per_sample(*parts[f"mpvpe_all_{tag}_mm"]),
        "mrrpe_mm": _per_sample(*parts["mrrpe_mm"]),
        f"mpjpe_{tag}_mm": _per_sample(jerr.sum(1), jok.sum(1)),
    }
    if not scaled:
        per_sample[f"rrve_right{tag}_mm"] = _per_sample(*parts[f"rrve_right{tag}_mm"])
    return EvalResult(
        summary=_summarise(prefix, parts, per_joint),
        per_sample=per_sample,
        ranking=per_sample[f"mpvpe_{tag}_mm"],
        parts={f"{prefix}/{k}": v for k, v in parts.items()},
        per_joint=frozenset(f"{prefix}/{k}" for k in per_joint),
    )


PROTOCOLS: dict[str, Callable[[dict, dict, str, np.ndarray], EvalResult]] = {"interwild": _interwild, "dir": _dir}


def evaluate(pred: dict, gt: dict, protocol: str = "interwild", dataset: str = "ih26m", hand_model=None, regressors=None) -> EvalResult:
    """Score predictions against ground truth.

    pred: `verts` (N, 1556, 3) m, optional `rel_trans` (N, 3) left-minus-right wrist, m.
    gt: `verts`, `mesh_valid` (N, 2), `joints3d` (N, 42, 3) m, `joints_valid` (N, 42),
    `hand_type` (N,) str. Regressors come from `hand_model` (or pass `regressors` (2, 21, 778)).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    if regressors is None:
        if hand_model is None:
            raise ValueError("evaluate needs hand_model or regressors")
        regressors = np.stack([_np(hand_model.joint_regressor(side)) for side in ("right", "left")])
    return PROTOCOLS[protocol](pred, gt, dataset, _np(regressors))


def bootstrap_ci(result: EvalResult, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every summary metric, resampling samples with replacement.

    Each resample reweights the per-sample parts, so the aggregation is exactly the summary's.
    Deterministic by seed.
    """
    rng = np.random.default_rng(seed)
    num_samples = len(result.ranking)
    draws = rng.integers(0, num_samples, size=(n, num_samples))
    weights = np.zeros((n, num_samples))
    np.add.at(weights, (np.repeat(np.arange(n), num_samples), draws.ravel()), 1.0)
    out = {}
    for key, (num, count) in result.parts.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            if key in result.per_joint:
                values = np.nanmean((weights @ num) / (weights @ count), axis=1)
            else:
                values = (weights @ num) / (weights @ count)
        values = values[np.isfinite(values)]
        out[key] = (float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))) if len(values) else (float("nan"),) * 2
    return out
