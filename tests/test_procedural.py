"""Procedural dataset: deterministic, resumable, geometrically sound, read back by the IH2.6M reader."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from handrecon.camera import project
from handrecon.data.procedural import (
    INTERACTIONS,
    ProceduralConfig,
    SceneMeshes,
    SceneSampler,
    _distance_along,
    assign_splits,
    generate,
    render_scenes,
)
from handrecon.data.readers import create_reader
from handrecon.data.sample import check_sample
from handrecon.errors import UserError

SMALL = ProceduralConfig(image_size=(64, 80), batch_size=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, hand_model):
    out = tmp_path_factory.mktemp("proc")
    stats = generate(hand_model, SMALL, out, num=24, seed=3, progress=False)
    return out, stats


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed_and_resumable(dataset, hand_model, tmp_path):
    out, stats = dataset
    assert sum(stats["counts"].values()) == 24 and stats["rendered"] == 24
    # interrupt: remove a few samples' done markers (and one image), leave a stray temp file
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for i in (2, 7, 19):  # blocks of 8: samples 0-7 and 16-23 are redone
        (copy / "labels" / f"{i:06d}.json").unlink()
    next((copy / "images").rglob("image000007.jpg")).unlink()
    (copy / "labels" / ".000002.json.x.tmp").write_text("{")
    again = generate(hand_model, SMALL, copy, num=24, seed=3, progress=False)
    assert again["rendered"] == 16
    (copy / "labels" / ".000002.json.x.tmp").unlink()
    assert _tree_bytes(copy) == _tree_bytes(out)
    # another folder, same seed: identical files
    fresh = tmp_path / "fresh"
    generate(hand_model, SMALL, fresh, num=24, seed=3, progress=False)
    assert _tree_bytes(fresh) == _tree_bytes(out)


def test_refuses_to_mix_seeds_or_configs(dataset, hand_model, tmp_path):
    out, _ = dataset
    with pytest.raises(UserError, match="seed=3 num=24"):
        generate(hand_model, SMALL, out, num=24, seed=4, progress=False)
    with pytest.raises(UserError, match="another --out"):
        generate(hand_model, ProceduralConfig(image_size=(64, 64)), out, num=24, seed=3, progress=False)
    # a folder an earlier sampler drew (no version recorded) is not resumed with the current one
    older = tmp_path / "older"
    older.mkdir()
    state = json.loads((out / "procedural.json").read_text())
    (older / "procedural.json").write_text(json.dumps({k: v for k, v in state.items() if k != "sampler"}))
    with pytest.raises(UserError, match="sampler version None; .* sampler version 2"):
        generate(hand_model, SMALL, older, num=24, seed=3, progress=False)


def test_reader_meshes_reproject_onto_the_rendered_hands(dataset, hand_model):
    out, _ = dataset
    sampler = SceneSampler(hand_model, SMALL, seed=3, num=24)
    meshes = SceneMeshes.build(hand_model)
    errors = []
    for split in ("train", "val", "test"):
        reader = create_reader("ih26m", out, split, hand_model)
        for i in range(len(reader)):
            sample = reader[i]
            check_sample(sample)
            scene = sampler.sample(int(sample["sample_id"]))
            assert scene.split == split and sample["hand_type"] == scene.hand_type
            assert list(sample["mesh_valid"]) == list(scene.valid)
            rendered = render_scenes([scene], hand_model, meshes, SMALL.image_size)
            f, c = torch.as_tensor(sample["focal"])[None], torch.as_tensor(sample["princpt"])[None]
            for h in np.flatnonzero(scene.valid):
                sl = slice(778 * h, 778 * (h + 1))
                ours = project(torch.as_tensor(sample["verts"][sl])[None], f, c)
                drawn = project(rendered["verts_cam"][:, sl], f, c)
                errors.append((ours - drawn).norm(dim=-1).mean().item())
    assert np.mean(errors) < 0.01  # pixels


@pytest.mark.parametrize("layout", ["any", "facing"])
def test_touching_and_apart_hands_keep_their_gaps(hand_model, layout):
    cfg = ProceduralConfig(single_hand_prob=0.0, layout=layout)
    sampler = SceneSampler(hand_model, cfg, seed=0, num=60)
    seen = set()
    for i in range(60):
        scene = sampler.sample(i)
        seen.add(scene.interaction)
        if scene.interaction not in ("touching", "apart"):
            continue
        verts = []
        for h, side in enumerate(("right", "left")):
            t = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
            out = hand_model.hand(side, betas=t(scene.shape[h]), global_orient=t(scene.pose[h, :3]), hand_pose=t(scene.pose[h, 3:]), transl=t(scene.transl[h]))
            verts.append(out.vertices[0].numpy())
        gap = cKDTree(verts[0]).query(verts[1])[0].min()
        if scene.interaction == "touching":
            assert gap < 0.0065
        else:
            assert gap > 0.029
    assert seen == set(INTERACTIONS)


def test_a_hand_brought_to_its_gap_never_passes_through_the_other():
    # two sparse spheres of radius r on one centre, brought apart along x: the first contact from
    # outside is pole (-r, 0, 0) of the moving one reaching pole (r, 0, 0) of the fixed one, at
    # s = 2 r + gap; at s = 0 the sparse vertices already lie more than `gap` apart, where a
    # search up from s = 0 stops with the spheres inside each other
    r, gap = 0.05, 0.002
    k = np.arange(40) + 0.5
    fib = np.stack([np.cos(np.pi * (1 + 5**0.5) * k) * np.sin(np.arccos(1 - 2 * k / 40)),
                    np.sin(np.pi * (1 + 5**0.5) * k) * np.sin(np.arccos(1 - 2 * k / 40)), 1 - 2 * k / 40], 1)  # fmt: skip
    fib = fib[np.abs(fib[:, 0]) < 0.9] * r
    fixed = np.concatenate([fib, [[r, 0, 0]]])
    moving = np.concatenate([fib @ np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0.0]]) * 0.97, [[-r, 0, 0]]])
    assert cKDTree(fixed).query(moving)[0].min() > gap
    s = _distance_along(fixed, moving, np.array([1.0, 0, 0]), gap)
    assert s == pytest.approx(2 * r + gap, abs=1e-5)
    beyond = [cKDTree(fixed).query(moving + [t, 0, 0])[0].min() for t in np.linspace(s, s + 0.2, 400)]
    assert min(beyond) >= gap - 1e-5


def test_hand_and_forearm_form_a_closed_surface(hand_model):
    meshes = SceneMeshes.build(hand_model)
    tube = (int(meshes.faces.max()) + 1 - 1556) // 2  # forearm vertices per side, right first
    for part in (1, 2):
        hand_faces = meshes.faces[meshes.face_part == part]
        start = 1556 + (part - 1) * tube
        arm = meshes.faces[(meshes.face_part == 3) & ((meshes.faces >= start) & (meshes.faces < start + tube)).any(1)]
        faces = torch.cat([hand_faces, arm]).numpy()
        directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        assert len({tuple(e) for e in directed.tolist()}) == len(directed)  # consistent winding
        _, counts = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
        assert (counts == 2).all()  # closed: every edge shared by two faces


def test_splits_follow_fractions():
    splits = assign_splits(1000, (0.8, 0.1, 0.1), seed=0)
    assert [splits.count(s) for s in ("train", "val", "test")] == [800, 100, 100]
    assert splits != assign_splits(1000, (0.8, 0.1, 0.1), seed=1)


def test_state_file_records_the_config(dataset):
    out, _ = dataset
    state = json.loads((out / "procedural.json").read_text())
    assert state["seed"] == 3 and state["num"] == 24 and state["config"]["image_size"] == [64, 80]


def _camera_skeletons(hand_model, scene, points="skeleton"):
    """(hand, 16, 3) MANO skeleton joints (0 wrist, 1-3 index, 4-6 middle, 7-9 little, 10-12
    ring, 13-15 thumb) of the scene's valid hands in its camera frame; points="joints": the 21
    joints (0 wrist, then 4 a finger from the thumb: 5, 9, 13, 17 the finger knuckles)."""
    out = []
    for h, side in enumerate(("right", "left")):
        if scene.valid[h]:
            t = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
            hand = hand_model.hand(side, betas=t(scene.shape[h]), global_orient=t(scene.pose[h, :3]), hand_pose=t(scene.pose[h, 3:]), transl=t(scene.transl[h]))
            out.append((getattr(hand, points)[0].double().numpy() - scene.cam_pos) @ scene.cam_rot.T)
    return out


@pytest.mark.parametrize("view", ["palm", "back", "thumb", "little", "fingertips"])
def test_named_views_show_the_camera_that_side(hand_model, view):
    # no tilt or roll: the fingers point up in the image (the back of the hand for "fingertips")
    # and the named side is the one nearest the camera; checked on the posed skeletons, without
    # the sampler's hand frame: a fist curls the fingers towards the palm side
    cfg = ProceduralConfig(views=(view,), view_tilt=0.0, roll_range=(0.0, 0.0), grasps=("fist",), interaction_weights=(1, 1, 0, 1))
    sampler = SceneSampler(hand_model, cfg, seed=0, num=12)
    up = np.array([0.0, 0.0, -1.0]) if view == "fingertips" else np.array([0.0, -1.0, 0.0])
    for i in range(12):
        for skel in _camera_skeletons(hand_model, sampler.sample(i)):
            fingers = (skel[4] - skel[0]) / np.linalg.norm(skel[4] - skel[0])
            assert fingers @ up > 0.95
            curl = skel[[3, 6, 9, 12]].mean(0) - skel[[1, 4, 7, 10]].mean(0)  # finger ends - finger bases: palm side
            thumb = skel[13] - skel[7]  # thumb base - little-finger base
            nearer = {"palm": -curl[2], "back": curl[2], "thumb": -thumb[2], "little": thumb[2]}
            if view in nearer:
                assert nearer[view] > 0
            else:
                assert curl[1] > 0  # fingertips view: the fist curls down in the image (y down), away from the back of the hand


def test_view_roll_and_tilt_follow_their_ranges(hand_model):
    cfg = ProceduralConfig(views=("palm",), view_tilt=0.0, roll_range=(np.pi / 2, np.pi / 2), single_hand_prob=1.0)
    sampler = SceneSampler(hand_model, cfg, seed=1, num=6)
    for i in range(6):
        (skel,) = _camera_skeletons(hand_model, sampler.sample(i))
        assert (skel[4] - skel[0]) @ [1, 0, 0] / np.linalg.norm(skel[4] - skel[0]) > 0.95  # a quarter turn: fingers right
    cfg = ProceduralConfig(views=("palm", "back"), view_tilt=0.5, single_hand_prob=1.0)
    sampler = SceneSampler(hand_model, cfg, seed=2, num=40)
    depth = []
    for i in range(40):
        (skel,) = _camera_skeletons(hand_model, sampler.sample(i))
        fingers = (skel[4] - skel[0]) / np.linalg.norm(skel[4] - skel[0])
        depth.append(np.arcsin(abs(fingers[2])))  # the finger axis leaves the image plane by at most the tilt
    assert max(depth) <= 0.5 + 0.05 and max(depth) > 0.2


@pytest.mark.parametrize("views", [("any",), ("palm", "back")])
def test_layout_puts_the_left_hand_on_its_side_of_the_image(hand_model, views):
    # palm centres (wrist and the four finger knuckles) in the camera frame: the left one lies
    # right of the right one ("facing") or left of it ("egocentric"); a clasp has no sides and
    # "any" takes both
    palm = [0, 5, 9, 13, 17]
    sides = {}
    for layout in ("facing", "egocentric", "any"):
        cfg = ProceduralConfig(single_hand_prob=0.0, views=views, layout=layout)
        sampler = SceneSampler(hand_model, cfg, seed=4, num=40)
        scenes = [sampler.sample(i) for i in range(40)]
        sides[layout] = set()
        for scene in scenes:
            if scene.interaction != "clasped":
                right, left = (joints[palm].mean(0) for joints in _camera_skeletons(hand_model, scene, "joints"))
                sides[layout].add(float(np.sign(left[0] - right[0])))
    assert sides == {"facing": {1.0}, "egocentric": {-1.0}, "any": {-1.0, 1.0}}


def test_config_refuses_unknown_views_grasps_and_tilts():
    for kw, name in ((dict(views=("side",)), "views"), (dict(grasps=("claw",)), "grasps"), (dict(view_tilt=2.0), "view_tilt"), (dict(layout="mirror"), "layout")):
        with pytest.raises(ValueError, match=name):
            ProceduralConfig(**kw)
