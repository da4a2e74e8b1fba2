"""Generation metrics: FID / KID against closed forms, hand crops on the hands, label consistency."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from image_checks import colour_count, read_png

from handrecon.data.readers import create_reader
from handrecon.errors import UserError
from synth.condition import condition_from_samples
from synth.genmetrics import FeatureCache, fid, hand_crop, kid, label_consistency


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, 8, 8, 3)).repeat(8, 0).astype(np.float64)
    imgs = np.clip(base + rng.normal(0, 40, (8, 8, 8, 3)), 0, 255)
    return [np.asarray(Image_resize(im), np.uint8) for im in imgs]


def Image_resize(image):  # noqa: N802 - a tiny helper
    from PIL import Image

    return Image.fromarray(image.astype(np.uint8)).resize((64, 64), Image.BILINEAR)


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(inception_weights, images, tmp_path):
    cache = FeatureCache(inception_weights, tmp_path / "features")
    clean = cache.features(images, [str(i) for i in range(len(images))], "whole")
    assert clean.shape == (8, 2048)
    assert abs(fid(clean, clean)) < 1e-3
    rng = np.random.default_rng(1)
    scores = []
    for sigma in (20, 120):
        noisy = [np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).astype(np.uint8) for im in images]
        scores.append(fid(clean, cache.features(noisy, [f"n{sigma}-{i}" for i in range(len(noisy))], "whole")))
    assert 0 < scores[0] < scores[1]
    # features are cached per set: a second call reads the file
    files = list((tmp_path / "features").glob("*.npy"))
    assert len(files) == 3
    again = FeatureCache(inception_weights, tmp_path / "features").features([], [str(i) for i in range(len(images))], "whole")
    np.testing.assert_array_equal(again, clean)


def test_missing_inception_weights_are_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="weights-inception-2015-12-05-6726825d.pth"):
        FeatureCache(tmp_path / "none.pth", tmp_path).features([], ["a"], "whole")


def test_inception_weights_load_as_tensors_only(tmp_path):
    """torch-fidelity unpickles the weights file; a tampered one must run no code."""
    import os

    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": Payload()}, path)
    with pytest.raises(UserError, match=r"refused to load: .*GLOBAL posix.system"):
        FeatureCache(path, tmp_path / "features").features([np.zeros((8, 8, 3), np.uint8)], ["a"], "whole")
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # the switch is restored


def _naive_kid(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 2048)), rng.normal(size=(60, 2048))
    mean, _ = kid(x, y, subsets=1, subset_size=60)
    assert mean == pytest.approx(_naive_kid(x, y), rel=1e-6, abs=1e-9)
    # same distribution: KID scatters around 0 (unbiased); shifted: clearly positive
    draws = [kid(rng.normal(size=(40, 2048)), rng.normal(size=(40, 2048)), subsets=5, subset_size=40, seed=s)[0] for s in range(10)]
    shifted = kid(x, y + 0.5, subsets=5, subset_size=40)[0]
    assert abs(np.mean(draws)) < 3 * np.std(draws) / np.sqrt(len(draws)) + 1e-6
    assert shifted > 10 * np.std(draws)


def test_hand_crops_center_the_rendered_hands(procedural_root, hand_model):
    reader = create_reader("ih26m", procedural_root, "test", hand_model)
    for i in range(6):
        sample = reader[i]
        mask = (condition_from_samples(hand_model, [sample])["hand"][0].numpy() >= 0).astype(np.uint8) * 255
        crop = hand_crop(np.repeat(mask[..., None], 3, -1), sample["boxes"], margin=1.5, size=99)
        ys, xs = np.nonzero(crop[..., 0] > 127)
        assert len(ys)
        side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        # the hands fill about 1/margin of the crop (boxes come from the joints; the skin reaches a little further)
        assert 0.45 * 99 < side <= 0.85 * 99
        centre = np.array([(xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2])
        assert np.abs(centre - 49).max() < 12
    assert hand_crop(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 4))) is None


class _Oracle(torch.nn.Module):
    """Returns each sample's own label mesh, optionally moved: what a perfect regressor would read."""

    def __init__(self, input_size, shift=(0.0, 0.0, 0.0)):
        super().__init__()
        self.input_size, self.shift = input_size, torch.tensor(shift)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        verts = batch["verts"].float().clone()
        verts[:, 778:] += self.shift  # the left hand only
        return {"verts": verts, "rel_trans": torch.zeros(len(verts), 3)}


def test_label_consistency_is_zero_for_the_labels_themselves(procedural_root, hand_model):
    reader = create_reader("ih26m", procedural_root, "test", hand_model)
    size = tuple(int(v) for v in reader[0]["image_size"])
    exact = label_consistency(_Oracle(size), reader, hand_model)
    assert np.nanmax(exact["mpjpe_mm"]) < 1e-3 and np.nanmax(exact["joints2d_px"]) < 1e-2
    moved = label_consistency(_Oracle(size, (0.0, 0.0, 0.05)), reader, hand_model)
    both = np.array([bool(reader[i]["mesh_valid"].all()) for i in range(len(reader))])
    # a translation moves no root-relative joint; the 2D joints of the moved hand do shift
    assert np.nanmax(moved["mpjpe_mm"]) < 1e-3
    assert (moved["joints2d_px"][both] > 0.1).all()


@pytest.mark.slow
def test_generation_report_scores_a_cache_and_reuses_real_features(tmp_path, procedural_root, mano_dir, hand_model, inception_weights):
    from shard_utils import write_test_shards

    from handrecon.config import load_config
    from handrecon.engine import checkpoint as ckpt
    from handrecon.models import create_model
    from synth.generation_eval import GenerationEval, evaluate_generation

    reader = create_reader("ih26m", procedural_root, "val", hand_model)
    shards = write_test_shards([reader[i] for i in range(4)], tmp_path / "gen", per_shard=2)
    # a regressor checkpoint for label consistency (untrained weights: the numbers only need to exist)
    model = create_model("dir_tiny", hand_model)
    run = tmp_path / "reg"
    from handrecon.config import to_yaml
    from handrecon.engine import Experiment

    ckpt.save_checkpoint(run, 1, model, {"step": 1}, to_yaml(load_config(Experiment, None, ["model.name=dir_tiny"])))
    cfg = load_config(GenerationEval, None, [
        f"generated={shards}", f"real={{kind: ih26m, root: {procedural_root}, split: test}}", "max_real=4", f"mano_dir={mano_dir}",
        f"inception_weights={inception_weights}", f"out={tmp_path / 'report'}", "kid_subsets=3", f"regressor={run}", "device=cpu", "grid=2",
    ])  # fmt: skip
    result = evaluate_generation(cfg)
    assert set(result["metrics"]) >= {"fid", "kid", "fid_h", "kid_h", "label_mpjpe_mm", "label_joints2d_px"}
    assert all(np.isfinite(v) for v in result["metrics"].values())
    assert len(result["per_sample"]["mpjpe_mm"]) == 4
    report = tmp_path / "report"
    assert len((report / "per_sample.csv").read_text().splitlines()) == 5
    # a best and a worst row per per-sample score, grid=2 images each: 2.0 in wide and 2.2 in high per cell at 100 dpi
    grid = read_png(report / "best_worst.png", (400, 440 * len(result["per_sample"])))
    assert colour_count(grid) > 2000  # the images themselves, not only titles on white
    import json

    provenance = json.loads((report / "metrics.json").read_text())["provenance"]
    assert provenance["num_generated"] == 4 and provenance["real"]["num"] == 4 and len(provenance["inception_weights_sha256"]) == 64
    # another generated set against the same real set: only the new set is extracted
    before = set((report / "features").glob("*.npy"))
    other = write_test_shards([reader[i] for i in range(2, 6)], tmp_path / "gen2", per_shard=2)
    cfg.generated, cfg.regressor = str(other), None
    evaluate_generation(cfg)
    assert len(set((report / "features").glob("*.npy")) - before) == 2  # whole images and hand crops of the new set


def test_detector_configuration_errors_are_clear(tmp_path):
    from synth.detectors import DetectorConfig, build_detector

    assert build_detector(DetectorConfig()) is None
    with pytest.raises(UserError, match="set up MediaPipe once"):
        build_detector(DetectorConfig(name="mediapipe", python=str(tmp_path / "python")))
    with pytest.raises(UserError, match="detector.name must be one of"):
        build_detector(DetectorConfig(name="yolo"))


def test_ablation_rows_toggle_one_thing_at_a_time():
    from synth.ablation import Ablation, rows

    table = rows(Ablation(alphas=[1.0, 2.5]))
    assert [name for name, _ in table] == ["w/o all", "+SE", "+SE+SF", "+SE+SF+AE a=1", "+SE+SF+AE a=2.5"]
    settings = [o for _, o in table]
    assert settings[0]["prompt_field"] == "caption" and settings[1]["prompt_field"] == "prompt"
    assert [o["structural_fusion"] for o in settings] == [False, False, True, True, True]
    assert [o["hand_bias"] for o in settings] == [0.0, 0.0, 0.0, 1.0, 2.5]


@pytest.mark.skipif(not os.environ.get("SESAHAND_MEDIAPIPE_PYTHON"), reason="set SESAHAND_MEDIAPIPE_PYTHON to a MediaPipe environment's python")
def test_mediapipe_worker_finds_rendered_hands(procedural_root, hand_model):
    from synth.detectors import DetectorConfig, build_detector

    reader = create_reader("ih26m", procedural_root, "test", hand_model)
    detector = build_detector(DetectorConfig(name="mediapipe", python=os.environ["SESAHAND_MEDIAPIPE_PYTHON"]))
    scores = detector.scores([reader[i]["image"] for i in range(len(reader))] + [np.zeros((64, 64, 3), np.uint8)])
    assert scores[-1] == 0 and scores[:-1].max() > 0.5
