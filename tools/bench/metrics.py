#!/usr/bin/env python
"""Time the vectorised InterWild-protocol evaluate() against a per-sample Python loop on random samples."""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from handrecon.cli import run_tool
from handrecon.hand_model.constants import NUM_VERTS
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano
from handrecon.metrics import DATASET_RULES, evaluate, regressors_of


def per_sample_loop(pred: np.ndarray, gt: dict, regs: np.ndarray, dataset: str) -> dict[str, float]:
    """The straightforward implementation: one sample at a time (numpy over that sample's
    vertices), collecting per-hand / per-joint values in lists, then InterWild's averaging."""
    vert = {"single": [], "inter": []}
    joint = {"single": [[] for _ in range(42)], "inter": [[] for _ in range(42)]}
    rrve, mrrpe = [], []
    for i in range(len(pred)):
        p, g = pred[i].reshape(2, NUM_VERTS, 3), gt["verts"][i].reshape(2, NUM_VERTS, 3)
        pj = [regs[h] @ p[h] for h in range(2)]
        gj = [regs[h] @ g[h] for h in range(2)]
        ht, valid = gt["hand_type"][i], gt["joints_valid"][i]
        split = "inter" if ht == "interacting" else "single"
        counted = [gt["mesh_valid"][i, h] and ht in (side, "interacting") for h, side in enumerate(("right", "left"))]
        for h in range(2):
            if counted[h]:
                vert[split].append(np.linalg.norm((p[h] - pj[h][0]) - (g[h] - gj[h][0]), axis=1).mean() * 1000)
        annotated = gt["joints3d"][i].reshape(2, 21, 3)
        both_meshes, both_wrists = gt["mesh_valid"][i].all(), valid[0] and valid[21]
        if dataset == "hic":
            selected, rel_gt = ht == "interacting" and both_meshes, gj[1][0] - gj[0][0]
        else:
            selected, rel_gt = both_wrists and (dataset == "ih26m" or both_meshes), annotated[1, 0] - annotated[0, 0]
        rel_pred = pj[1][0] - pj[0][0]
        if selected:
            mrrpe.append(np.linalg.norm(rel_pred - rel_gt) * 1000)
            if both_meshes:
                a = np.concatenate([p[0] - pj[0][0], p[1] - pj[1][0] + rel_pred])
                b = np.concatenate([g[0] - gj[0][0], g[1] - gj[1][0] + rel_gt])
                rrve.append(np.linalg.norm(a - b, axis=1).mean() * 1000)
        for h in range(2):
            if dataset == "ih26m":
                target, ok = annotated[h], valid[21 * h : 21 * (h + 1)]
            else:
                target, ok = gj[h], np.full(21, counted[h])
            if ok[0]:
                err = np.linalg.norm((pj[h] - pj[h][0]) - (target - target[0]), axis=1) * 1000
                for j in np.flatnonzero(ok):
                    joint[split][21 * h + j].append(err[j])
    means = {k: [np.mean(e) for e in v if e] for k, v in joint.items()}
    return {
        "interwild/mpvpe_all_wrist_mm": float(np.mean(vert["single"] + vert["inter"])),
        "interwild/mpvpe_single_wrist_mm": float(np.mean(vert["single"])),
        "interwild/mpvpe_inter_wrist_mm": float(np.mean(vert["inter"])),
        "interwild/rrve_rightwrist_mm": float(np.mean(rrve)),
        "interwild/mrrpe_mm": float(np.mean(mrrpe)),
        "interwild/mpjpe_all_wrist_mm": float(np.mean(means["single"] + means["inter"])),
        "interwild/mpjpe_single_wrist_mm": float(np.mean(means["single"])),
        "interwild/mpjpe_inter_wrist_mm": float(np.mean(means["inter"])),
    }


def random_split(hand_model: HandModel, regs: np.ndarray, num: int, seed: int) -> tuple[np.ndarray, dict]:
    """Template hands moved about, jittered and randomly typed; predictions = gt + 5 mm noise."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([hand_model.layers[s].v_template.double().numpy() for s in ("right", "left")])
    gt_verts = base[None] + rng.normal(scale=0.05, size=(num, 1, 3)) + rng.normal(scale=0.01, size=(num, 2 * NUM_VERTS, 3))
    hand_type = rng.choice(np.array(["right", "left", "interacting"]), size=num)
    mesh_valid = np.stack([hand_type != "left", hand_type != "right"], 1)
    joints = np.einsum("hjv,nhvd->nhjd", regs, gt_verts.reshape(num, 2, NUM_VERTS, 3)).reshape(num, 42, 3)
    joints += rng.normal(scale=0.002, size=joints.shape)  # annotations are not the mesh's joints
    joints_valid = np.repeat(mesh_valid, 21, 1) & (rng.random((num, 42)) > 0.1)
    gt = {"verts": gt_verts, "mesh_valid": mesh_valid, "joints3d": joints, "joints_valid": joints_valid, "hand_type": hand_type}
    return gt_verts + rng.normal(scale=0.005, size=gt_verts.shape), gt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--num", type=int, default=10_000, help="samples (default 10000)")
    parser.add_argument("--dataset", default="ih26m", choices=sorted(DATASET_RULES), help="InterWild per-dataset rules")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mano = Path(tempfile.mkdtemp())
    write_standin_mano(mano)
    hand_model = HandModel(mano)
    regs = regressors_of(hand_model).numpy()
    pred, gt = random_split(hand_model, regs, args.num, args.seed)

    start = time.perf_counter()
    fast = evaluate({"verts": pred}, gt, dataset=args.dataset, regressors=regs).summary
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = per_sample_loop(pred, gt, regs, args.dataset)
    t_slow = time.perf_counter() - start
    worst = max(abs(fast[k] - v) for k, v in slow.items() if not math.isnan(v))
    if set(fast) != set(slow) or worst > 1e-6:
        raise SystemExit(f"the two implementations disagree (max difference {worst:.3g} mm): {fast} vs {slow}")
    print(f"{args.num} samples, InterWild protocol ({args.dataset} rules, {len(fast)} metrics); agree to {worst:.1e} mm")
    print(f"vectorised evaluate: {t_fast:.2f} s, per-sample loop: {t_slow:.2f} s")
    print(f"vectorised vs per-sample loop: {t_slow / t_fast:.1f}x")
    return 0


if __name__ == "__main__":
    run_tool(main)
