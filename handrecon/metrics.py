"""Two-hand reconstruction metrics, vectorised over samples: the InterWild and the DIR protocols.

Units and layout
----------------
Inputs are metres, outputs millimetres. A two-hand mesh is (N, 1556, 3): right-hand vertices
0..777, then left 778..1555. Joints are (N, 42, 3) in our 21-joint order per hand, right hand
first (wrist = joint 0, middle-finger MCP = joint 9 of each hand). Each hand's joints are
regressed from that hand's own mesh with `HandModel.joint_regressor(side)` (21, 778);
`regressors` below is both stacked, (2, 21, 778), right first. Every function takes numpy
arrays or torch tensors and computes in float64; the core functions return torch tensors,
`evaluate` returns numpy. Undefined values (a hand without ground truth, a sample outside a
metric's sample set) are NaN.

Key scheme
----------
`<protocol>/<metric>[_<subset>]_<alignment>_mm`, the protocol prefix on every key, summary and
per-sample alike, so numbers of different protocols never mix. Alignment tokens:
`wrist` = each hand translated so that its own wrist is the origin (prediction at the predicted
wrist, ground truth at the ground-truth wrist), no rotation, no scale; `rightwrist` = both hands
relative to the right wrist, the left hand placed by its relative translation; `mcp_scaled` =
each hand at its own middle-finger MCP and the prediction scaled to the ground-truth bone length
(DIR). MRRPE compares relative translations, not aligned shapes, and has no alignment token;
its roots are the protocol's (wrists for interwild, middle MCPs for dir).

InterWild protocol (`protocol='interwild'`)
------------------------------------------
As facebookresearch/InterWild data/{InterHand26M,HIC,ReInterHand}/*.py `evaluate` and
`print_eval_result`, sample rule by sample rule. A hand *counts* for MPVPE when its ground-truth
mesh is valid and the sample's hand_type includes it ('interacting' includes both hands; a
'right' sample only the right), except on ReIH where both hands of every sample count (below).
A missing ground-truth mesh is a zero mesh wherever it is used (InterWild's dummy zeros).

- `interwild/mpvpe_all_wrist_mm`: mean over every counted hand of its mean wrist-aligned vertex
  error; a single-hand sample contributes one hand, an interacting sample up to two.
- `interwild/mpvpe_single_wrist_mm`: the same over counted hands of 'right' / 'left' samples.
- `interwild/mpvpe_inter_wrist_mm`: the same over counted hands of 'interacting' samples (a hand
  counts even when the other hand's mesh is missing).
- `interwild/mrrpe_mm`: mean over the dataset's MRRPE samples of ||rel_pred - rel_gt||, rel =
  left wrist - right wrist. rel_pred is `pred['rel_trans']` when given (InterWild predicts it with
  a separate branch), else the difference of the predicted meshes' regressed wrists.
- `interwild/rrve_rightwrist_mm`: over the dataset's RRVE samples: the right hand at its wrist,
  the left hand at its wrist plus rel (rel_gt for the ground truth, rel_pred for the
  prediction), mean vertex error over all 1556 vertices, then mean over samples.
- `interwild/mpjpe_{single,inter}_wrist_mm`: per joint, the mean wrist-aligned error over the
  samples of that hand type where the joint (and its hand's wrist) is valid; then the mean over
  the 42 joints. `interwild/mpjpe_all_wrist_mm` is the mean of the 84 per-joint means (42 single
  + 42 interacting), InterWild's `np.mean(mpjpe_sh + mpjpe_ih)`. Predicted joints are
  `pred['joints3d']` when given (InterWild uses a learnt regressor), else regressed from the
  predicted mesh.

Per dataset (`DATASET_RULES`, the `dataset` argument):

| dataset | MRRPE samples | RRVE samples | rel_gt from | MPVPE hands | MPJPE target, validity |
|---------|---------------|--------------|-------------|-------------|------------------------|
| ih26m   | both wrists valid in the annotation, any hand_type | 'interacting' with both MANO fits, no wrist checked | annotated wrists | hand_type's, with a fit | annotated joints; the annotation's joint_valid x its wrist's, both hands, any hand_type |
| hic     | every 'interacting' sample | 'interacting' with both meshes | mesh-regressed wrists, a missing mesh a zero mesh | hand_type's, with a mesh | mesh-regressed joints of counted hands (InterWild reports none) |
| reih    | every sample (with both wrist keypoints) | the same | keypoint wrists | both hands of every sample, a missing fit a zero mesh | mesh-regressed joints, all 42 of every sample |
| mscoco  | none (per-hand fit cameras: no relative pose) | none | - | hand_type's, with a fit | mesh-regressed joints (fitted hands) |

IH2.6M's annotation comes from the reader's `annotation_labels()` (gt keys `annot_joints3d`,
`annot_joints_valid`, `annot_sample_valid`; without them the labels `joints3d` / `joints_valid`
stand in): InterWild's joint_trunc (the annotation's joint_valid, zeroed for a hand without its
wrist or without a hand box), joints without a 3D annotation at InterWild's 1 mm placeholder
(so its rel_gt, RRVE and MPJPE use that placeholder, as InterWild's do), and the samples
InterWild's loader drops (no annotated joint, no 3D-valid joint, no hand box) count nowhere.
Differences from InterWild's code: a per-joint mean over no sample is skipped (InterWild's would
be NaN); a ReIH sample without a wrist keypoint has no MRRPE / RRVE (InterWild's would be NaN);
on ReIH InterWild zeroes the mesh of a hand with no joint inside the image, our reader keeps
its fit; on IH2.6M a fit counts where our reader keeps it (hand_type's hand with an annotated
3D-valid joint) where InterWild keeps it when the hand has a box.

`interwild_strict` (`protocol='interwild_strict'`, keys `interwild_strict/...`): the same
arithmetic with the stricter rules this protocol had before it followed InterWild's samples
(`DatasetRules.strict`): joints annotated AND 3D-valid and only the hands in hand_type (the
reader's `joints_valid`) for ih26m MRRPE and MPJPE; RRVE on the MRRPE samples with both meshes;
HIC MRRPE on interacting samples with both meshes; ReIH MPVPE / MPJPE on hands with a mesh only.
Off unless asked for (`--protocol interwild_strict`, `val.protocol`).

DIR / IntagHand protocol (`protocol='dir'`)
------------------------------------------
As Dw1010/IntagHand apps/eval_interhand.py and PengfeiRen96/DIR apps/eval.py (root_joint=9).
Samples: 'interacting' with both ground-truth meshes (IntagHand's test set: interacting, both
MANO fits); the `dataset` argument does not change them. Joints are regressed from the meshes,
ground truth and prediction alike (annotations and `pred['joints3d']` are not used). Each hand is aligned at its middle-finger MCP and
the aligned prediction (vertices and joints) is multiplied by |gt joint0 - gt joint9| /
|pred joint0 - pred joint9| of that hand (wrist to middle-MCP bone; a zero predicted bone keeps
scale 1), so the scores ignore the prediction's scale entirely.

- `dir/mpvpe_{right,left}_mcp_scaled_mm`: mean over samples and vertices of one side;
  `dir/mpvpe_mcp_scaled_mm` = (right + left) / 2, DIR's "all".
- `dir/mpjpe_{right,left}_mcp_scaled_mm`, `dir/mpjpe_mcp_scaled_mm`: the same over the 21 joints.
- `dir/mrrpe_mm`: ||off_pred - off_gt||, off = right middle MCP - left middle MCP (DIR's sign),
  unscaled. off_pred is the predicted meshes' MCP difference, or with `pred['rel_trans']` the MCP
  offset it implies: (R9 - R0) - (L9 - L0) - rel_trans. The norm does not depend on the sign.

`dir_wrist` (`protocol='dir_wrist'`): the same with the wrist as the root joint, DIR's released
apps/eval.py default (root_joint=0; the scale is still the wrist-to-middle-MCP bone): keys
`dir/{mpvpe,mpjpe}[_right|_left]_wrist_scaled_mm`, `dir/mrrpe_wrist_mm` (off = right wrist - left
wrist; with `rel_trans`, -rel_trans).

Bootstrap
---------
Every summary value is a function of per-sample sums (`EvalResult.stats`: sums and counts per
sample), so `bootstrap_ci` resamples samples with replacement, sums the stats with the resample
weights (one matrix product per block of resamples) and recomputes every summary value with the
very aggregation `evaluate` used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

import numpy as np
import torch

from .errors import UserError
from .hand_model.constants import NUM_JOINTS, NUM_VERTS

ArrayLike = Union[np.ndarray, torch.Tensor]
Stats = dict[str, np.ndarray]
Aggregator = Callable[[Stats], dict[str, np.ndarray]]

MM = 1000.0
WRIST, MIDDLE_MCP = 0, 9
HAND_TYPE_CODES = {"right": 0, "left": 1, "interacting": 2}
INTERACTING = HAND_TYPE_CODES["interacting"]
CHUNK = 256  # samples per pass in `evaluate`: bounded memory and cache-sized arrays


# --- input checks -------------------------------------------------------------------------------
PREDICTION_KEYS = ("verts", "rel_trans", "joints3d")


class NonFinitePredictionError(UserError, ValueError):
    """Predictions hold NaN or infinite values. Never scored: a non-finite value would drop out of
    the means as if its hand had no ground truth and so *improve* the score."""


def nonfinite_samples(pred: dict) -> dict[str, np.ndarray]:
    """Per prediction array of `pred` (`PREDICTION_KEYS`), the indices of the samples with a NaN
    or infinite value; arrays without one are left out."""
    out = {}
    for key in PREDICTION_KEYS:
        if key in pred:
            x = torch.as_tensor(pred[key])
            if not x.is_floating_point():  # integers are always finite
                continue
            bad = ~torch.isfinite(x.reshape(len(x), -1)).all(1)
            if bad.any():
                out[key] = bad.nonzero()[:, 0].cpu().numpy()
    return out


def check_finite(pred: dict, sample_ids=None, where: str = "predictions") -> None:
    """Raise `NonFinitePredictionError` naming the arrays and samples (ids, else indices) where
    `pred` has NaN or infinite values."""
    bad = nonfinite_samples(pred)
    if not bad:
        return
    parts = []
    for key, rows in bad.items():
        names = [str(sample_ids[i]) if sample_ids is not None else str(i) for i in rows[:5]]
        more = f", ... ({len(rows)} in all)" if len(rows) > 5 else ""
        parts.append(f"'{key}' of {len(rows)} sample(s): {', '.join(names)}{more}")
    raise NonFinitePredictionError(f"{where}: NaN or infinite values in " + "; ".join(parts))


# --- conversions --------------------------------------------------------------------------------
def as_f64(x: ArrayLike) -> torch.Tensor:
    """numpy or torch -> float64 tensor (numpy memory is shared until the cast)."""
    return torch.as_tensor(x).to(torch.float64)


def split_hands(verts: ArrayLike) -> torch.Tensor:
    """(N, 1556, 3) two-hand meshes -> (N, 2, 778, 3) float64; (N, 2, 778, 3) passes through."""
    v = as_f64(verts)
    if v.shape[-2:] == (2 * NUM_VERTS, 3):
        return v.reshape(*v.shape[:-2], 2, NUM_VERTS, 3)
    if v.shape[-3:] == (2, NUM_VERTS, 3):
        return v
    raise ValueError(f"two-hand meshes must be (N, {2 * NUM_VERTS}, 3), got {tuple(v.shape)}")


def hand_type_codes(hand_type) -> torch.Tensor:
    """(N,) 'right' / 'left' / 'interacting' strings (or their codes 0 / 1 / 2) -> int64 codes."""
    arr = np.asarray(hand_type)
    if arr.dtype.kind not in "USO":
        return torch.as_tensor(arr.astype(np.int64))
    names, inverse = np.unique(arr.astype(str), return_inverse=True)  # map the few distinct names
    unknown = sorted(set(names.tolist()) - set(HAND_TYPE_CODES))
    if unknown:
        raise ValueError(f"hand_type must be one of {tuple(HAND_TYPE_CODES)}, got {unknown}")
    return torch.as_tensor(np.array([HAND_TYPE_CODES[t] for t in names], dtype=np.int64)[inverse.reshape(-1)])


def hands_in_type(codes: torch.Tensor) -> torch.Tensor:
    """(N,) hand-type codes -> (N, 2) bool: the sample's hand_type includes (right, left)."""
    return torch.stack([codes != HAND_TYPE_CODES["left"], codes != HAND_TYPE_CODES["right"]], -1)


# --- core per-sample functions (vectorised over samples) ------------------------------------------
def hand_joints(verts: ArrayLike, regressors: ArrayLike) -> torch.Tensor:
    """(N, 1556, 3) meshes, (2, 21, 778) regressors -> (N, 2, 21, 3) joints, each hand from its own mesh."""
    v, r = split_hands(verts), as_f64(regressors)
    n = v.shape[0]
    # one (3N, 778) @ (778, 21) GEMM per hand: ~10x faster than broadcasting N tiny (21,778)@(778,3) products
    return torch.stack([(v[:, h].transpose(1, 2).reshape(-1, NUM_VERTS) @ r[h].T).reshape(n, 3, -1).transpose(1, 2) for h in range(2)], 1)


def root_aligned(verts: ArrayLike, joint_regressor: ArrayLike, root: int = WRIST) -> torch.Tensor:
    """(N, 778, 3) one-hand meshes minus their own regressed joint `root`; metres."""
    v = as_f64(verts)
    return v - (as_f64(joint_regressor)[root] @ v)[..., None, :]


def wrist_aligned(verts: ArrayLike, joint_regressor: ArrayLike) -> torch.Tensor:
    """(N, 778, 3) one-hand meshes with their own regressed wrist moved to the origin; metres."""
    return root_aligned(verts, joint_regressor, WRIST)


def relative_translation(joints: ArrayLike, root: int = WRIST) -> torch.Tensor:
    """(N, 2, 21, 3) per-hand joints -> (N, 3) left root - right root (InterWild's rel), metres."""
    j = as_f64(joints)
    return j[:, 1, root] - j[:, 0, root]


def bone_scale(pred_joints: ArrayLike, gt_joints: ArrayLike, a: int = WRIST, b: int = MIDDLE_MCP) -> torch.Tensor:
    """(N, 2, 21, 3) joints -> (N, 2) |gt a-b bone| / |pred a-b bone| per hand (1 where the
    predicted bone has zero length, so a degenerate prediction is scored unscaled)."""
    p, g = as_f64(pred_joints), as_f64(gt_joints)
    bone_p = torch.linalg.vector_norm(p[..., a, :] - p[..., b, :], dim=-1)
    bone_g = torch.linalg.vector_norm(g[..., a, :] - g[..., b, :], dim=-1)
    return torch.where(bone_p > 0, bone_g / bone_p.clamp_min(1e-12), torch.ones_like(bone_p))


def _joints_or_regress(pred, gt, regressors, joints):
    return joints if joints is not None else (hand_joints(pred, regressors), hand_joints(gt, regressors))


def mpvpe_per_hand(
    pred: ArrayLike,
    gt: ArrayLike,
    valid: ArrayLike,
    regressors: ArrayLike,
    root: int = WRIST,
    scale: ArrayLike | None = None,
    joints: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean per-vertex error of each hand after aligning it at its own joint `root`, in mm.

    pred, gt: (N, 1556, 3) m; valid: (N, 2) which hands count (NaN elsewhere); regressors
    (2, 21, 778); scale: optional (N, 2) factor on the aligned prediction (DIR); joints: optional
    precomputed (pred, gt) `hand_joints`. Returns (N, 2).
    """
    P, G = split_hands(pred), split_hands(gt)
    pj, gj = _joints_or_regress(P, G, regressors, joints)
    if scale is None:
        # one difference array: (P - p_root) - (G - g_root) = (P - G) - (p_root - g_root)
        diff = (P - G).sub_((pj[:, :, root] - gj[:, :, root])[:, :, None])
    else:
        diff = as_f64(scale)[..., None, None] * (P - pj[:, :, root, None]) - (G - gj[:, :, root, None])
    err = torch.linalg.vector_norm(diff, dim=-1).mean(-1) * MM
    return torch.where(torch.as_tensor(valid, dtype=torch.bool), err, torch.nan)


def rrve_per_sample(
    pred: ArrayLike,
    gt: ArrayLike,
    pred_rel: ArrayLike,
    gt_rel: ArrayLike,
    valid: ArrayLike,
    regressors: ArrayLike,
    joints: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Right-wrist-relative vertex error (RRVE) per sample, mm, (N,).

    Both meshes (N, 1556, 3) are put in their right-wrist frame: right hand minus its wrist, left
    hand minus its own wrist plus its relative translation (pred_rel / gt_rel, (N, 3) left wrist -
    right wrist, m). Mean over all 1556 vertices; NaN where `valid` (N,) is False.
    """
    P, G = split_hands(pred), split_hands(gt)
    pj, gj = _joints_or_regress(P, G, regressors, joints)
    off_right = pj[:, 0, WRIST] - gj[:, 0, WRIST]
    off_left = (pj[:, 1, WRIST] - as_f64(pred_rel)) - (gj[:, 1, WRIST] - as_f64(gt_rel))
    diff = (P - G).sub_(torch.stack([off_right, off_left], 1)[:, :, None])
    err = torch.linalg.vector_norm(diff, dim=-1).mean((-1, -2)) * MM
    return torch.where(torch.as_tensor(valid, dtype=torch.bool), err, torch.nan)


def mrrpe_per_sample(pred_rel: ArrayLike, gt_rel: ArrayLike, valid: ArrayLike | None = None) -> torch.Tensor:
    """||pred_rel - gt_rel|| per sample in mm, (N,); NaN where `valid` (N,) is False."""
    err = torch.linalg.vector_norm(as_f64(pred_rel) - as_f64(gt_rel), dim=-1) * MM
    return err if valid is None else torch.where(torch.as_tensor(valid, dtype=torch.bool), err, torch.nan)


def joint_errors(
    pred_joints: ArrayLike, gt_joints: ArrayLike, joints_valid: ArrayLike, root: int = WRIST, scale: ArrayLike | None = None
) -> torch.Tensor:
    """Per-joint error after aligning each hand at its own joint `root`, mm, (N, 42).

    pred_joints, gt_joints: (N, 42, 3) m, right hand first; joints_valid (N, 42); scale: optional
    (N, 2) factor on the aligned prediction. NaN where the joint or its hand's root is invalid.
    """
    p, g = as_f64(pred_joints).reshape(-1, 2, NUM_JOINTS, 3), as_f64(gt_joints).reshape(-1, 2, NUM_JOINTS, 3)
    p = p - p[:, :, root, None]
    if scale is not None:
        p = as_f64(scale)[..., None, None] * p
    err = torch.linalg.vector_norm(p - (g - g[:, :, root, None]), dim=-1) * MM
    ok = torch.as_tensor(joints_valid, dtype=torch.bool).reshape(-1, 2, NUM_JOINTS)
    ok = ok & ok[:, :, root, None]
    return torch.where(ok, err, torch.nan).reshape(-1, 2 * NUM_JOINTS)


def mpjpe_per_hand(
    pred_joints: ArrayLike, gt_joints: ArrayLike, joints_valid: ArrayLike, root: int = WRIST, scale: ArrayLike | None = None
) -> torch.Tensor:
    """Mean over each hand's valid joints of `joint_errors`, mm, (N, 2); NaN for a hand with none."""
    return joint_errors(pred_joints, gt_joints, joints_valid, root, scale).reshape(-1, 2, NUM_JOINTS).nanmean(-1)


# --- dataset rules (InterWild's per-dataset sample selection and ground-truth sources) -----------
SOURCES = ("annotation", "labels", "mesh")
HANDS = ("hand_type", "every")


@dataclass(frozen=True)
class DatasetRules:
    """One dataset's sample rules for the InterWild protocols.

    mrrpe_select: gt chunk -> (n,) bool, the samples MRRPE uses (and, without `rrve_select`, with
    both meshes, RRVE). rel_from / joints_from: where the ground-truth relative translation and
    the MPJPE targets come from: 'annotation' (the raw annotation, `gt['annot_joints3d']` /
    `gt['annot_joints_valid']`, falling back to the labels where the reader gives none), 'labels'
    (`gt['joints3d']` / `gt['joints_valid']`, the reader's training labels) or 'mesh' (regressed
    from the ground-truth meshes, a missing mesh being a zero mesh). rrve_select: gt chunk ->
    (n,) bool, the RRVE samples (None: the MRRPE samples with both meshes). hands: which hands
    MPVPE (and mesh-sourced MPJPE) score: 'hand_type' (a valid mesh of a hand the sample's
    hand_type includes) or 'every' (both hands of every sample, a missing mesh being a zero
    mesh). strict: the rules of the `interwild_strict` protocol (None: these)."""

    mrrpe_select: Callable[[dict], torch.Tensor]
    rel_from: str
    joints_from: str
    rrve_select: Callable[[dict], torch.Tensor] | None = None
    hands: str = "hand_type"
    strict: "DatasetRules | None" = None

    def __post_init__(self):
        for what, value, allowed in (("rel_from", self.rel_from, SOURCES), ("joints_from", self.joints_from, SOURCES), ("hands", self.hands, HANDS)):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


DATASET_RULES: dict[str, DatasetRules] = {}


def register_dataset_rules(
    name: str,
    rel_from: str,
    joints_from: str,
    rrve_select: Callable[[dict], torch.Tensor] | None = None,
    hands: str = "hand_type",
    strict: DatasetRules | None = None,
):
    """Decorator: register an MRRPE sample-selection function (gt chunk -> (n,) bool) with the
    other rules of dataset `name` (see `DatasetRules`)."""

    def register(select: Callable[[dict], torch.Tensor]) -> Callable[[dict], torch.Tensor]:
        DATASET_RULES[name] = DatasetRules(select, rel_from, joints_from, rrve_select, hands, strict)
        return select

    return register


def annotation(gt: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(joints (n, 42, 3), valid (n, 42)): the raw annotation when the reader gives one
    (`annot_joints3d` / `annot_joints_valid`), else the labels (`joints3d` / `joints_valid`)."""
    if "annot_joints3d" in gt:
        return gt["annot_joints3d"], gt["annot_joints_valid"]
    return gt["joints3d"], gt["joints_valid"]


def _both_wrists(valid: torch.Tensor) -> torch.Tensor:
    return valid[:, WRIST] & valid[:, NUM_JOINTS + WRIST]


def _both_wrists_labelled(gt: dict) -> torch.Tensor:
    return _both_wrists(gt["joints_valid"])


def _both_wrists_annotated(gt: dict) -> torch.Tensor:
    return _both_wrists(gt["annot_joints_valid"] if "annot_joints_valid" in gt else gt["joints_valid"])


def _interacting(gt: dict) -> torch.Tensor:
    return gt["hand_type"] == INTERACTING


def _interacting_both_meshes(gt: dict) -> torch.Tensor:
    return _interacting(gt) & gt["mesh_valid"].all(1)


# The rules the `interwild` protocol used before it followed InterWild's evaluate() sample by
# sample; `interwild_strict` keeps them (stricter validity: annotated AND 3D-valid joints of the
# hands in hand_type, both meshes for every relative metric).
_STRICT = {
    "ih26m": DatasetRules(_both_wrists_labelled, "labels", "labels"),
    "hic": DatasetRules(_interacting_both_meshes, "mesh", "mesh"),
    "reih": DatasetRules(_both_wrists_labelled, "labels", "mesh"),
}


@register_dataset_rules("ih26m", rel_from="annotation", joints_from="annotation", rrve_select=_interacting_both_meshes, strict=_STRICT["ih26m"])
def _select_ih26m(gt: dict) -> torch.Tensor:
    """InterHand26M.py evaluate: MRRPE wherever the annotation marks both wrists valid, whatever
    the hand_type; RRVE on 'interacting' samples with both MANO fits, no wrist checked."""
    return _both_wrists_annotated(gt)


@register_dataset_rules("hic", rel_from="mesh", joints_from="mesh", rrve_select=_interacting_both_meshes, strict=_STRICT["hic"])
def _select_hic(gt: dict) -> torch.Tensor:
    """HIC.py evaluate: MRRPE on every 'interacting' sample, rel_gt from the wrists regressed from
    the two ground-truth meshes, a missing mesh being a zero mesh; RRVE needs both meshes."""
    return _interacting(gt)


@register_dataset_rules("reih", rel_from="annotation", joints_from="mesh", rrve_select=_both_wrists_annotated, hands="every", strict=_STRICT["reih"])
def _select_reih(gt: dict) -> torch.Tensor:
    """ReInterHand.py evaluate: MRRPE, RRVE, MPVPE (both hands) and MPJPE (all 42 joints) on every
    sample, a missing fit being a zero mesh; rel_gt from the keypoint wrists (InterWild checks no
    wrist: samples whose wrist keypoint is missing, which InterWild would score as NaN, are left out)."""
    return _both_wrists_annotated(gt)


def gt_relative_translation(gt: dict, gt_mesh_joints: torch.Tensor, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rel_gt (n, 3) left wrist - right wrist, defined (n,)) from the annotation, the labels or
    the meshes (joints of zero meshes where a mesh is missing, so defined everywhere)."""
    if source == "mesh":
        return relative_translation(gt_mesh_joints), torch.ones(len(gt_mesh_joints), dtype=torch.bool)
    j, valid = annotation(gt) if source == "annotation" else (gt["joints3d"], gt["joints_valid"])
    return j[:, NUM_JOINTS + WRIST] - j[:, WRIST], _both_wrists(valid)


def gt_joint_targets(gt: dict, gt_mesh_joints: torch.Tensor, counted: torch.Tensor, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (n, 42, 3), valid (n, 42)): annotated joints, labels, or joints of the counted gt meshes."""
    if source == "annotation":
        return annotation(gt)
    if source == "labels":
        return gt["joints3d"], gt["joints_valid"]
    return gt_mesh_joints.reshape(-1, 2 * NUM_JOINTS, 3), counted.repeat_interleave(NUM_JOINTS, 1)


# --- summable per-sample statistics ---------------------------------------------------------------
def _sum_count(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """NaN-marked values -> [..., (sum, count)] of the finite ones (reduced over `axis` if given)."""
    ok = np.isfinite(x)
    s, c = np.where(ok, x, 0.0), ok.astype(np.float64)
    if axis is not None:
        s, c = s.sum(axis), c.sum(axis)
    return np.stack([s, c], -1)


def _ratio(sc: np.ndarray) -> np.ndarray:
    """[..., (sum, count)] -> sum / count, NaN where count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sc[..., 1] > 0, sc[..., 0] / sc[..., 1], np.nan)


def nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the finite entries along `axis`, NaN where there are none (and no warning)."""
    return _ratio(_sum_count(x, axis))


# --- protocols ----------------------------------------------------------------------------------
PROTOCOLS: dict[str, type] = {}


def register_protocol(name: str):
    """Class decorator: a protocol has static `per_sample(pred, gt, rules, regressors)` -> raw
    per-sample tensors of one chunk, `statistics(raw)` -> summable `Stats`, `aggregate(summed
    Stats with a leading resample axis)` -> key -> values, `report(raw)` -> per-sample values,
    `ranking`, the per-sample key that orders samples by error, and `main`, the summary key a run
    is judged by (the default `train.best_metric`)."""

    def register(cls: type) -> type:
        PROTOCOLS[name] = cls
        return cls

    return register


@register_protocol("interwild")
class InterWildProtocol:
    """Wrist alignment, no scale, InterWild's per-dataset sample rules; see the module docstring."""

    P = "interwild"
    strict = False
    ranking = f"{P}/mpvpe_wrist_mm"
    main = f"{P}/mpvpe_all_wrist_mm"

    @classmethod
    def per_sample(cls, pred: dict, gt: dict, rules: DatasetRules, regressors: torch.Tensor) -> dict[str, torch.Tensor]:
        if cls.strict and rules.strict is not None:
            rules = rules.strict
        mesh_valid = gt["mesh_valid"]
        P, G = pred["verts"], gt["verts"]
        G = torch.where(mesh_valid[:, :, None, None], G, torch.zeros((), dtype=G.dtype))  # a missing mesh is a zero mesh
        pj, gj = hand_joints(P, regressors), hand_joints(G, regressors)
        if rules.hands == "every":
            counted = torch.ones_like(mesh_valid)
        else:
            counted = mesh_valid & hands_in_type(gt["hand_type"])
        rel_pred = pred["rel_trans"] if "rel_trans" in pred else relative_translation(pj)
        rel_gt, rel_defined = gt_relative_translation(gt, gj, rules.rel_from)
        selected = rules.mrrpe_select(gt) & rel_defined
        rrve_selected = rules.rrve_select(gt) if rules.rrve_select is not None else selected & mesh_valid.all(1)
        targets, targets_valid = gt_joint_targets(gt, gj, counted, rules.joints_from)
        if not cls.strict and "annot_sample_valid" in gt:  # samples InterWild's loader leaves out count nowhere
            kept = gt["annot_sample_valid"]
            counted, selected, rrve_selected = counted & kept[:, None], selected & kept, rrve_selected & kept
            targets_valid = targets_valid & kept[:, None]
        pred_joints = pred["joints3d"] if "joints3d" in pred else pj.reshape(-1, 2 * NUM_JOINTS, 3)
        return {
            "mpvpe": mpvpe_per_hand(P, G, counted, regressors, joints=(pj, gj)),
            "inter": gt["hand_type"] == INTERACTING,
            "rrve": rrve_per_sample(P, G, rel_pred, rel_gt, rrve_selected, regressors, joints=(pj, gj)),
            "mrrpe": mrrpe_per_sample(rel_pred, rel_gt, selected),
            "joint_err": joint_errors(pred_joints, targets, targets_valid),
        }

    @staticmethod
    def statistics(raw: dict[str, np.ndarray]) -> Stats:
        inter = raw["inter"][:, None]
        e, j = raw["mpvpe"], raw["joint_err"]
        return {
            "mpvpe_single": _sum_count(np.where(inter, np.nan, e), axis=1),  # (N, 2): sum, count
            "mpvpe_inter": _sum_count(np.where(inter, e, np.nan), axis=1),
            "rrve": _sum_count(raw["rrve"]),
            "mrrpe": _sum_count(raw["mrrpe"]),
            "mpjpe_single": _sum_count(np.where(inter, np.nan, j)),  # (N, 42, 2): per joint
            "mpjpe_inter": _sum_count(np.where(inter, j, np.nan)),
        }

    @classmethod
    def aggregate(cls, s: Stats) -> dict[str, np.ndarray]:
        P = cls.P
        joints_single, joints_inter = _ratio(s["mpjpe_single"]), _ratio(s["mpjpe_inter"])  # per-joint means
        return {
            f"{P}/mpvpe_all_wrist_mm": _ratio(s["mpvpe_single"] + s["mpvpe_inter"]),
            f"{P}/mpvpe_single_wrist_mm": _ratio(s["mpvpe_single"]),
            f"{P}/mpvpe_inter_wrist_mm": _ratio(s["mpvpe_inter"]),
            f"{P}/rrve_rightwrist_mm": _ratio(s["rrve"]),
            f"{P}/mrrpe_mm": _ratio(s["mrrpe"]),
            f"{P}/mpjpe_all_wrist_mm": nanmean(np.concatenate([joints_single, joints_inter], -1)),
            f"{P}/mpjpe_single_wrist_mm": nanmean(joints_single),
            f"{P}/mpjpe_inter_wrist_mm": nanmean(joints_inter),
        }

    @classmethod
    def report(cls, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        P = cls.P
        return {
            f"{P}/mpvpe_right_wrist_mm": raw["mpvpe"][:, 0],
            f"{P}/mpvpe_left_wrist_mm": raw["mpvpe"][:, 1],
            f"{P}/mpvpe_wrist_mm": nanmean(raw["mpvpe"]),
            f"{P}/rrve_rightwrist_mm": raw["rrve"],
            f"{P}/mrrpe_mm": raw["mrrpe"],
            f"{P}/mpjpe_wrist_mm": nanmean(raw["joint_err"]),
        }


@register_protocol("interwild_strict")
class InterWildStrictProtocol(InterWildProtocol):
    """The InterWild arithmetic with stricter sample rules (each dataset's `DatasetRules.strict`):
    joints annotated AND 3D-valid, only hands in hand_type, both meshes for every relative metric."""

    P = "interwild_strict"
    strict = True
    ranking = f"{P}/mpvpe_wrist_mm"
    main = f"{P}/mpvpe_all_wrist_mm"


class DIRProtocol:
    """Root alignment with ground-truth bone-length scaling; see the module docstring. Subclasses
    fix the root joint (`ROOT`) and its key token (`ALIGN`)."""

    P = "dir"
    ROOT, ALIGN = MIDDLE_MCP, "mcp"
    MRRPE = "dir/mrrpe_mm"

    @classmethod
    def per_sample(cls, pred: dict, gt: dict, rules: DatasetRules, regressors: torch.Tensor) -> dict[str, torch.Tensor]:
        P, G, r = pred["verts"], gt["verts"], cls.ROOT
        pj, gj = hand_joints(P, regressors), hand_joints(G, regressors)
        selected = (gt["hand_type"] == INTERACTING) & gt["mesh_valid"].all(1)
        valid = selected[:, None].expand(-1, 2)
        scale = bone_scale(pj, gj)
        off_gt = gj[:, 0, r] - gj[:, 1, r]  # right - left, DIR's gt_offset
        if "rel_trans" in pred:  # wrists placed by the predicted rel, then the roots' difference
            off_pred = (pj[:, 0, r] - pj[:, 0, WRIST]) - (pj[:, 1, r] - pj[:, 1, WRIST]) - pred["rel_trans"]
        else:
            off_pred = pj[:, 0, r] - pj[:, 1, r]
        flat = (pj.reshape(-1, 2 * NUM_JOINTS, 3), gj.reshape(-1, 2 * NUM_JOINTS, 3))
        return {
            "mpvpe": mpvpe_per_hand(P, G, valid, regressors, root=r, scale=scale, joints=(pj, gj)),
            "joint_err": joint_errors(*flat, valid.repeat_interleave(NUM_JOINTS, 1), root=r, scale=scale),
            "mrrpe": mrrpe_per_sample(off_pred, off_gt, selected),
        }

    @staticmethod
    def statistics(raw: dict[str, np.ndarray]) -> Stats:
        e, j = raw["mpvpe"], raw["joint_err"]
        return {
            "mpvpe_right": _sum_count(e[:, 0]),
            "mpvpe_left": _sum_count(e[:, 1]),
            "mpjpe_right": _sum_count(j[:, :NUM_JOINTS], axis=1),  # all joints of all samples of a side
            "mpjpe_left": _sum_count(j[:, NUM_JOINTS:], axis=1),
            "mrrpe": _sum_count(raw["mrrpe"]),
        }

    @classmethod
    def aggregate(cls, s: Stats) -> dict[str, np.ndarray]:
        P, A, out = cls.P, cls.ALIGN, {}
        for metric in ("mpvpe", "mpjpe"):
            right, left = _ratio(s[f"{metric}_right"]), _ratio(s[f"{metric}_left"])
            out[f"{P}/{metric}_{A}_scaled_mm"] = (right + left) / 2  # DIR's "all": mean of the side means
            out[f"{P}/{metric}_right_{A}_scaled_mm"] = right
            out[f"{P}/{metric}_left_{A}_scaled_mm"] = left
        out[cls.MRRPE] = _ratio(s["mrrpe"])
        return out

    @classmethod
    def report(cls, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        P, A = cls.P, cls.ALIGN
        return {
            f"{P}/mpvpe_right_{A}_scaled_mm": raw["mpvpe"][:, 0],
            f"{P}/mpvpe_left_{A}_scaled_mm": raw["mpvpe"][:, 1],
            f"{P}/mpvpe_{A}_scaled_mm": nanmean(raw["mpvpe"]),
            f"{P}/mpjpe_{A}_scaled_mm": nanmean(raw["joint_err"]),
            cls.MRRPE: raw["mrrpe"],
        }


@register_protocol("dir")
class DIRMCPProtocol(DIRProtocol):
    """IntagHand's root: the middle MCP (DIR's eval with root_joint=9)."""

    ranking = main = "dir/mpvpe_mcp_scaled_mm"


@register_protocol("dir_wrist")
class DIRWristProtocol(DIRProtocol):
    """DIR's released eval default: the wrist (root_joint=0)."""

    ROOT, ALIGN = WRIST, "wrist"
    MRRPE = "dir/mrrpe_wrist_mm"
    ranking = main = "dir/mpvpe_wrist_scaled_mm"


# --- evaluation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalResult:
    """summary: key -> value (mm); per_sample: key -> (N,) values, NaN where undefined (for a
    per-sample CSV); ranking: (N,) per-sample error that orders samples from best to worst;
    stats / aggregator: the per-sample sums whose column sums `aggregator` turns into `summary`
    (what `bootstrap_ci` resamples)."""

    protocol: str
    dataset: str
    summary: dict[str, float]
    per_sample: dict[str, np.ndarray]
    ranking: np.ndarray
    stats: Stats = field(repr=False)
    aggregator: Aggregator = field(repr=False)


def _shape_check(name: str, x, shape: tuple) -> None:
    got = tuple(np.shape(x))
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {got}")


def _inputs(pred: dict, gt: dict) -> tuple[dict, dict, int]:
    """Check shapes and turn everything into CPU tensors (numpy memory shared; cast per chunk)."""
    n = len(gt["hand_type"])
    spec = {"verts": (n, 2 * NUM_VERTS, 3), "mesh_valid": (n, 2), "joints3d": (n, 2 * NUM_JOINTS, 3), "joints_valid": (n, 2 * NUM_JOINTS)}
    for key, shape in spec.items():
        if key not in gt:
            raise ValueError(f"gt is missing '{key}'")
        _shape_check(f"gt['{key}']", gt[key], shape)
    pred_spec = {"verts": (n, 2 * NUM_VERTS, 3), "rel_trans": (n, 3), "joints3d": (n, 2 * NUM_JOINTS, 3)}
    if "verts" not in pred:
        raise ValueError("pred is missing 'verts'")
    for key in pred:
        if key in pred_spec:
            _shape_check(f"pred['{key}']", pred[key], pred_spec[key])
    optional = {"annot_joints3d": (n, 2 * NUM_JOINTS, 3), "annot_joints_valid": (n, 2 * NUM_JOINTS), "annot_sample_valid": (n,)}
    if ("annot_joints3d" in gt) != ("annot_joints_valid" in gt):
        raise ValueError("gt needs both 'annot_joints3d' and 'annot_joints_valid', or neither")
    for key, shape in optional.items():
        if key in gt:
            _shape_check(f"gt['{key}']", gt[key], shape)
            spec[key] = shape
    g = {k: torch.as_tensor(np.asarray(gt[k]) if not torch.is_tensor(gt[k]) else gt[k]).cpu() for k in spec}
    for key in ("mesh_valid", "joints_valid", "annot_joints_valid", "annot_sample_valid"):
        if key in g:
            g[key] = g[key].bool()
    g["hand_type"] = hand_type_codes(gt["hand_type"])
    p = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).cpu() for k, v in pred.items() if k in pred_spec}
    return p, g, n


def _chunk(d: dict[str, torch.Tensor], a: int, b: int) -> dict[str, torch.Tensor]:
    out = {k: (v[a:b].to(torch.float64) if v.is_floating_point() else v[a:b]) for k, v in d.items()}
    if "verts" in out:
        out["verts"] = split_hands(out["verts"])
    return out


def regressors_of(hand_model) -> torch.Tensor:
    """(2, 21, 778) float64 joint regressors (right, left) of a `HandModel`."""
    return torch.stack([hand_model.joint_regressor(s).detach().cpu() for s in ("right", "left")]).to(torch.float64)


def evaluate(
    pred: dict,
    gt: dict,
    protocol: str = "interwild",
    dataset: str = "ih26m",
    regressors: ArrayLike | None = None,
    hand_model=None,
) -> EvalResult:
    """Score predictions against ground truth with one protocol; see the module docstring.

    pred: `verts` (N, 1556, 3) m; optional `rel_trans` (N, 3) left wrist - right wrist, m (a
    separately predicted relative translation); optional `joints3d` (N, 42, 3) m (InterWild MPJPE).
    gt: `verts`, `mesh_valid` (N, 2), `joints3d` (N, 42, 3) m, `joints_valid` (N, 42), `hand_type`
    (N,) 'right' / 'left' / 'interacting'. dataset: a key of `DATASET_RULES`. Regressors
    (2, 21, 778), or taken from `hand_model`. Every prediction value must be finite: NaN or
    infinity anywhere is a `NonFinitePredictionError` naming the arrays and sample indices.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    if dataset not in DATASET_RULES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASET_RULES)}")
    if regressors is None:
        if hand_model is None:
            raise ValueError("evaluate needs regressors or a hand_model")
        regressors = regressors_of(hand_model)
    regs = as_f64(regressors).cpu()
    _shape_check("regressors", regs, (2, NUM_JOINTS, NUM_VERTS))
    proto, rules = PROTOCOLS[protocol], DATASET_RULES[dataset]
    p, g, n = _inputs(pred, gt)
    check_finite(p, where="predictions (sample indices)")
    if n == 0:
        raise ValueError("evaluate needs at least one sample")
    parts = [proto.per_sample(_chunk(p, a, a + CHUNK), _chunk(g, a, a + CHUNK), rules, regs) for a in range(0, n, CHUNK)]
    raw = {k: np.concatenate([part[k].cpu().numpy() for part in parts]) for k in parts[0]}
    stats = proto.statistics(raw)
    summary = {k: float(v[0]) for k, v in proto.aggregate({k: v.sum(0, keepdims=True) for k, v in stats.items()}).items()}
    per_sample = proto.report(raw)
    return EvalResult(protocol, dataset, summary, per_sample, per_sample[proto.ranking], stats, proto.aggregate)


# --- bootstrap ----------------------------------------------------------------------------------
def _index_blocks(num_samples: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """Resampled sample indices, (block, num_samples) at a time; blocks depend only on the sizes,
    so the stream is a deterministic function of (num_samples, n, seed)."""
    rng = np.random.default_rng(seed)
    block = max(1, min(n, (1 << 22) // max(num_samples, 1)))  # ~32 MB of weights per block
    for start in range(0, n, block):
        yield rng.integers(0, num_samples, size=(min(block, n - start), num_samples))


def bootstrap_indices(num_samples: int, n: int = 1000, seed: int = 0) -> np.ndarray:
    """(n, num_samples) the sample indices `bootstrap_distribution` draws for these arguments."""
    return np.concatenate(list(_index_blocks(num_samples, n, seed))) if n else np.zeros((0, num_samples), np.int64)


def bootstrap_distribution(
    per_sample_values: EvalResult | Stats, aggregator: Aggregator | None = None, n: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Every summary value recomputed on `n` resamples of the samples (with replacement): key -> (n,).

    per_sample_values: an `EvalResult` (its stats and aggregator), or a dict of per-sample
    summable arrays (N, ...) with `aggregator` mapping their sums (B, ...) to key -> (B,) values.
    A resample is a weight per sample (how often it was drawn); weighted sums are one matrix
    product per block of resamples.
    """
    if isinstance(per_sample_values, EvalResult):
        stats, aggregator = per_sample_values.stats, aggregator or per_sample_values.aggregator
    else:
        stats = per_sample_values
    if aggregator is None:
        raise ValueError("bootstrap needs an aggregator (or an EvalResult, which carries one)")
    names = list(stats)
    num = len(stats[names[0]])
    shapes = {k: stats[k].shape[1:] for k in names}
    flat = np.concatenate([stats[k].reshape(num, -1).astype(np.float64) for k in names], 1)  # (N, K)
    bounds = np.cumsum([0] + [int(np.prod(shapes[k])) for k in names])
    out: dict[str, list[np.ndarray]] = {}
    for idx in _index_blocks(num, n, seed):
        m = len(idx)
        weights = np.bincount((idx + num * np.arange(m)[:, None]).ravel(), minlength=m * num).reshape(m, num)
        sums = weights.astype(np.float64) @ flat  # (m, K)
        split = {k: sums[:, bounds[i] : bounds[i + 1]].reshape(m, *shapes[k]) for i, k in enumerate(names)}
        for key, values in aggregator(split).items():
            out.setdefault(key, []).append(np.asarray(values, dtype=np.float64))
    return {k: np.concatenate(v) for k, v in out.items()}


def bootstrap_ci(
    per_sample_values: EvalResult | Stats, aggregator: Aggregator | None = None, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, tuple[float, float]]:
    """Percentile (1 - alpha) intervals of every summary value over `n` resamples of the SAMPLES
    (not hands), each recomputed with the summary's own aggregation; deterministic by seed.
    Resamples where a value is undefined (e.g. no interacting sample drawn) are left out."""
    out = {}
    for key, values in bootstrap_distribution(per_sample_values, aggregator, n, seed).items():
        finite = values[np.isfinite(values)]
        out[key] = (float(np.quantile(finite, alpha / 2)), float(np.quantile(finite, 1 - alpha / 2))) if len(finite) else (np.nan, np.nan)
    return out


__all__ = [
    "DATASET_RULES",
    "HAND_TYPE_CODES",
    "MIDDLE_MCP",
    "PROTOCOLS",
    "WRIST",
    "DatasetRules",
    "DIRProtocol",
    "EvalResult",
    "NonFinitePredictionError",
    "PREDICTION_KEYS",
    "InterWildProtocol",
    "InterWildStrictProtocol",
    "annotation",
    "as_f64",
    "bone_scale",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_indices",
    "check_finite",
    "evaluate",
    "gt_joint_targets",
    "gt_relative_translation",
    "hand_joints",
    "hand_type_codes",
    "hands_in_type",
    "joint_errors",
    "mpjpe_per_hand",
    "mpvpe_per_hand",
    "mrrpe_per_sample",
    "nanmean",
    "nonfinite_samples",
    "register_dataset_rules",
    "register_protocol",
    "regressors_of",
    "relative_translation",
    "root_aligned",
    "rrve_per_sample",
    "split_hands",
    "wrist_aligned",
]
