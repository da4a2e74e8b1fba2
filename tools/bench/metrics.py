#!/usr/bin/env python
"""Benchmark the vectorised InterWild-protocol metrics against a per-sample Python loop."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from handrecon.cli import run_tool
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano
from handrecon.metrics import evaluate


def per_sample_loop(pred: np.ndarray, gt: dict, regs: np.ndarray) -> dict[str, float]:
    """The straightforward implementation of the same metrics: one sample at a time (numpy
    over the vertices of a sample), then the same aggregation."""
    hands = {"all": [], "single": [], "inter": []}
    rrve, mrrpe = [], []
    joint_err = [[] for _ in range(42)]
    for i in range(len(pred)):
        p, g = pred[i].reshape(2, 778, 3), gt["verts"][i].reshape(2, 778, 3)
        pj = [regs[h] @ p[h] for h in range(2)]
        gj = [regs[h] @ g[h] for h in range(2)]
        single = gt["hand_type"][i] != "interacting"
        for h in range(2):
            if not gt["mesh_valid"][i, h]:
                continue
            e = np.linalg.norm((p[h] - pj[h][0]) - (g[h] - gj[h][0]), axis=1).mean() * 1000
            hands["all"].append(e)
            hands["single" if single else "inter"].append(e)
            ann = gt["joints3d"][i, 21 * h : 21 * (h + 1)]
            ok = gt["joints_valid"][i, 21 * h : 21 * (h + 1)]
            if ok[0]:
                err = np.linalg.norm((pj[h] - pj[h][0]) - (ann - ann[0]), axis=1) * 1000
                for j in np.flatnonzero(ok):
                    joint_err[21 * h + j].append(err[j])
        if gt["mesh_valid"][i].all():
            a = np.concatenate([p[0] - pj[0][0], p[1] - pj[0][0]])
            b = np.concatenate([g[0] - gj[0][0], g[1] - gj[0][0]])
            rrve.append(np.linalg.norm(a - b, axis=1).mean() * 1000)
            mrrpe.append(np.linalg.norm((pj[1][0] - pj[0][0]) - (gj[1][0] - gj[0][0])) * 1000)
    out = {f"interwild/mpvpe_{k}_wrist_mm": float(np.mean(v)) for k, v in hands.items()}
    out.update({"interwild/rrve_rightwrist_mm": float(np.mean(rrve)), "interwild/mrrpe_mm": float(np.mean(mrrpe))})
    out["interwild/mpjpe_wrist_mm"] = float(np.mean([np.mean(e) for e in joint_err if e]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--num", type=int, default=10_000, help="samples")
    args = parser.parse_args(argv)
    mano = Path(tempfile.mkdtemp())
    write_standin_mano(mano)
    hand_model = HandModel(mano)
    regs = np.stack([hand_model.joint_regressor(s).double().numpy() for s in ("right", "left")])
    rng = np.random.default_rng(0)
    base = np.concatenate([hand_model.layers[s].v_template.double().numpy() for s in ("right", "left")])
    gt_verts = base[None] + rng.normal(scale=0.01, size=(args.num, 1556, 3))
    hand_type = rng.choice(np.array(["right", "left", "interacting"]), size=args.num)
    mesh_valid = np.stack([hand_type != "left", hand_type != "right"], 1)
    joints = np.einsum("hjv,nhvd->nhjd", regs, gt_verts.reshape(-1, 2, 778, 3)).reshape(-1, 42, 3)
    gt = {"verts": gt_verts, "mesh_valid": mesh_valid, "joints3d": joints, "joints_valid": np.repeat(mesh_valid, 21, 1), "hand_type": hand_type}
    pred = gt_verts + rng.normal(scale=0.005, size=gt_verts.shape)

    start = time.perf_counter()
    fast = evaluate({"verts": pred}, gt, dataset="reih", regressors=regs).summary
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = per_sample_loop(pred, gt, regs)
    t_slow = time.perf_counter() - start
    for key, value in slow.items():
        assert abs(fast[key] - value) < 1e-6, (key, fast[key], value)
    print(f"{args.num} samples, InterWild protocol (6 metrics): vectorised {t_fast:.2f} s, per-sample loop {t_slow:.2f} s")
    print(f"vectorised vs per-sample loop: {t_slow / t_fast:.1f}x")
    return 0


if __name__ == "__main__":
    run_tool(main)
