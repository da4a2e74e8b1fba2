"""Training the SesaHand ControlNet: (image, mesh condition, behaviour prompt) -> noise prediction.

Stable Diffusion (VAE, text encoder, UNet) stays frozen; the fusion ControlNet learns, with the
hand-token bias in the cross-attention of the components `generator.hand_bias_targets` names, in
the loop the regressors' trainer runs too (`handrecon.engine.loop`: same `train` keys, resume,
DDP). Data come from the named sources of the `data` section (mixed at `ratios`) through the
resumable mixed sampler, as for the regressors; each sample is cropped around its hands
(`generator.crop_margin`) to a square at the generation resolution, its condition rendered from
its labels (`generator.condition_style`) and its prompt (`generator.prompt_field`) read from a
prompt cache (`tools/semantics.py`) or made by the rules chain.

The `generator` section is the `GeneratorSettings` of `synth/settings.py`: every checkpoint's
`controlnet/` holds them as `sesahand_settings.json` (resolution filled in), and validation,
the cache job, live generation and the ablation read them from there.

Randomness that a step draws (VAE posterior sample, noise, timesteps) comes from a generator
seeded by (seed, step, micro-batch, rank), and whether a pair trains on the empty prompt
(`data.empty_prompt_prob`, as diffusers' ``--proportion_empty_prompts``) from (seed, epoch,
sample index, repeat), so a resumed run reproduces the uninterrupted run's losses exactly. Checkpoints (`checkpoints/step_XXXXXXXX/controlnet/`, diffusers format) load with
`FusionControlNetModel.from_pretrained` or `--set model.controlnet=...`.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from handrecon.config import check_fields
from handrecon.data.augment import crop_to_input
from handrecon.data.loader import DataConfig, build_mixed_loader, build_source
from handrecon.engine import checkpoint as ckpt
from handrecon.engine.amp import autocast
from handrecon.engine.distributed import barrier
from handrecon.engine.loop import LoopConfig, TrainLoop
from handrecon.engine.optim import OptimConfig, ScheduleConfig
from handrecon.errors import UserError
from handrecon.hand_model.mano import HandModel
from handrecon.io import atomic_save_image

from .attention import HAND_BIAS_TARGETS, HandTokenContext, hand_token_mask, install_hand_bias
from .condition import condition_from_samples
from .models.components import Components, load_components
from .settings import GeneratorSettings, read_settings, resolve_resolution, save_settings


def _moved(*names: str) -> dict[str, str]:
    """Keys that moved to the generator section, answered with their new place."""
    return {n: f"a generator setting now: write generator.{n} (saved with every ControlNet; synth/settings.py)" for n in names}


#: `model.base_dtype` -> the dtype the frozen components are held in.
BASE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class GeneratorConfig:
    base: str = "tiny"  # tiny | a Stable Diffusion 1.x diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)
    controlnet: str | None = None  # start from this ControlNet folder (this run's generator section still decides); default: a copy of the UNet encoder
    gradient_checkpointing: bool = False  # recompute the ControlNet's and the UNet's activations in backward: less memory, slower steps
    base_dtype: str = field(default="fp32", metadata={"choices": tuple(BASE_DTYPES)})  # of the frozen VAE, text encoder, UNet: fp32 | bf16 | fp16 (CUDA); the ControlNet trains in fp32

    __moved_keys__: ClassVar[dict[str, str]] = _moved(
        "structural_fusion", "fusion_resolutions", "fusion_resolution", "hand_bias", "hand_bias_targets", "condition_style"
    )


@dataclass
class GeneratorData(DataConfig):
    """The regressor's data section (sources, ratios, loader) and the pairs' own keys."""

    batch_size: int = 4  # per rank; >= 1
    prompts: str = ""  # a prompt cache .jsonl; empty: the rules chain on the fly
    dataset: str = ""  # the dataset's name in rules prompts (procedural, ih26m, reih, hic, mscoco); default: the first source's kind
    empty_prompt_prob: float = 0.0  # share of training pairs whose prompt is "" (the unconditional prompt of guidance); in [0, 1)

    __moved_keys__: ClassVar[dict[str, str]] = {**DataConfig.__moved_keys__, **_moved("crop_margin")}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, "in [0, 1)", "empty_prompt_prob")


@dataclass
class GeneratorTrain(LoopConfig):
    """The loop's keys (handrecon.engine.loop.LoopConfig) with the generator's defaults, and its validation grid."""

    max_steps: int | None = 1000  # optimizer steps (>= 1); when set it replaces `epochs`
    val_every: int = 200  # optimizer steps between validation grids (and at the end); 0: once per epoch
    ckpt_every: int = 500  # optimizer steps between checkpoints (and at the end); 0: once per epoch
    val_samples: int = 4  # >= 1
    val_inference_steps: int | None = None  # denoising steps of the grid (>= 1); null: generator.inference_steps

    __moved_keys__: ClassVar[dict[str, str]] = _moved("guidance_scale")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, ">= 1", "val_samples", "val_inference_steps")


@dataclass
class GeneratorExperiment:
    out: str = "runs/synth_train"
    mano_dir: str = ""  # MANO_RIGHT.pkl / MANO_LEFT.pkl
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)  # saved with every ControlNet: synth/settings.py
    data: GeneratorData = field(default_factory=GeneratorData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, weight_decay=1e-2))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="constant", warmup_steps=0))
    train: GeneratorTrain = field(default_factory=GeneratorTrain)


_EMPTY_PROMPT_TAG = 0x5E4D  # keeps the prompt draws apart from other draws seeded by the same numbers


def prompt_dropped(seed: int, epoch: int, index: int, repeat: int, prob: float) -> bool:
    """Whether the draw (`index`, `repeat`) of `epoch` trains on the empty prompt: true with
    probability `prob`, a pure function of its arguments (so a resumed run draws the same)."""
    if prob <= 0:
        return False
    return bool(np.random.default_rng([int(seed), int(epoch), int(index), int(repeat), _EMPTY_PROMPT_TAG]).random() < prob)


class PairTransform:
    """Sample -> training pair: image in [-1, 1], condition in [0, 1] (both 3 x S x S), prompt
    token ids and hand-token mask, as `settings` (resolution set) say (`condition=False`: no
    condition, for training the base model itself). With `empty_prompt_prob`
    a draw's prompt is replaced by "" with that probability (no hand tokens then), decided by
    :func:`prompt_dropped` from (`seed`, `epoch`, global index, repeat): set `epoch` before each
    epoch's iterator starts its workers. Deterministic; runs in the loader workers."""

    def __init__(self, hand_model: HandModel, tokenizer, settings: GeneratorSettings, prompts: dict[str, dict] | None, dataset: str,
                 empty_prompt_prob: float = 0.0, seed: int = 0, condition: bool = True):  # fmt: skip
        from synth.hand_tokens import HandWordFinder

        if settings.resolution is None:
            raise ValueError("PairTransform needs settings with the resolution set (resolve_resolution)")
        if not 0 <= empty_prompt_prob < 1:
            raise ValueError(f"empty_prompt_prob must be in [0, 1), got {empty_prompt_prob}")
        self.hand_model, self.tokenizer, self.settings, self.size = hand_model, tokenizer, settings, settings.resolution
        self.prompts, self.dataset = prompts, dataset
        self.empty_prompt_prob, self.seed, self.epoch = float(empty_prompt_prob), int(seed), 0
        self.condition = condition
        self.finder = HandWordFinder()
        self._chain = None

    def prompt(self, sample: dict) -> str:
        """The sample's prompt: its record's `prompt_field` in the prompt cache, or the rules chain's."""
        key = self.settings.prompt_field
        if self.prompts is not None:
            record = self.prompts.get(str(sample["sample_id"]))
            if record is None:
                raise UserError(f"sample {sample['sample_id']} has no record in the prompt cache; run tools/semantics.py over this split")
            return record[key]
        if self._chain is None:
            from synth.semantics.chain import SemanticsChain, SemanticsConfig

            self._chain = SemanticsChain(SemanticsConfig(tokenizer="tiny"), self.hand_model)  # the prompt only; columns below
        return self._chain([{**sample, "source": self.dataset}])[0][key]

    def __call__(self, sample: dict, index: int, repeat: int = 0) -> dict:
        """The loader's transform protocol: `index` (global) and `repeat` (earlier draws of the
        sample in the epoch) seed the empty-prompt draw."""
        from synth.hand_tokens import hand_tokens

        crop = crop_to_input(sample, (self.size, self.size), self.settings.crop_margin)
        text = self.prompt(crop)  # read even when dropped: a sample missing from the prompt cache is an error either way
        if prompt_dropped(self.seed, self.epoch, index, repeat, self.empty_prompt_prob):
            text = ""
        ids = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt")
        columns = hand_tokens(text, self.tokenizer, self.finder).columns if text else []
        mask = hand_token_mask([columns], self.tokenizer.model_max_length)[0]
        pair = {
            "sample_id": str(sample["sample_id"]),
            "source": crop["source"],
            "pixel_values": torch.from_numpy(crop["image"]).permute(2, 0, 1).float() / 127.5 - 1.0,
            "input_ids": ids["input_ids"][0],
            "hand_mask": mask,
            "prompt": text,
        }
        if self.condition:
            cond = condition_from_samples(self.hand_model, [crop], (self.size, self.size), self.settings.condition_style)["image"][0]
            pair["condition"] = cond.permute(2, 0, 1).contiguous()
        return pair


def step_generator(seed: int, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of one micro-batch's random draws: a function of its position only."""
    mixed = int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])
    return torch.Generator(device).manual_seed(mixed)


def noised(latents: torch.Tensor, scheduler, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_t, t, target) for the denoising loss: noise and timesteps drawn from `generator`, the
    target the noise (epsilon) or the velocity (v_prediction), as the scheduler predicts."""
    if scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"the noise scheduler's prediction_type must be 'epsilon' or 'v_prediction', got {scheduler.config.prediction_type!r}")
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    steps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator, device=latents.device)
    target = scheduler.get_velocity(latents, noise, steps) if scheduler.config.prediction_type == "v_prediction" else noise
    return scheduler.add_noise(latents, noise, steps), steps, target


def denoising_loss(parts: Components, controlnet, context: HandTokenContext, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """ControlNet's objective: || eps - eps_theta(z_t, t, c_t, c_f) ||^2 (or v for v-prediction)."""
    vae, unet, scheduler = parts.vae, parts.unet, parts.scheduler
    with torch.no_grad():
        latents = vae.encode(batch["pixel_values"].to(vae.dtype)).latent_dist.sample(generator) * vae.config.scaling_factor
        text = parts.text_encoder(batch["input_ids"])[0]
    latents = latents.float()  # noise and noising in float32 even under autocast (sqrt(alpha_bar) ~ 1 rounds in bf16)
    noisy, steps, target = noised(latents, scheduler, generator)
    # each network gets its inputs in its own dtype (model.base_dtype: the frozen UNet's may differ from the ControlNet's)
    net, base = parts.controlnet.dtype, unet.dtype
    with context.use(batch["hand_mask"]):
        down, mid = controlnet(noisy.to(net), steps, text.to(net), controlnet_cond=batch["condition"].to(net), return_dict=False)
        pred = unet(noisy.to(base), steps, text.to(base), down_block_additional_residuals=tuple(d.to(base) for d in down),
                    mid_block_additional_residual=mid.to(base)).sample  # fmt: skip
    return F.mse_loss(pred.float(), target.float())


class PairLoop(TrainLoop):
    """The shared loop (handrecon.engine.loop) over the pairs of `cfg.data` (`PairTransform`):
    the base of the ControlNet's trainer and of the base model's (synth/pretrain_base.py)."""

    def setup_pairs(self, tokenizer, settings: GeneratorSettings, condition: bool = True):
        """Set `hand_model`, `val_source` (the first source) and `transform`; returns the mixed
        loader's (loader, sampler, sources) for `setup_loop`."""
        cfg = self.cfg
        self.hand_model = HandModel(cfg.mano_dir)
        prompts = None
        if cfg.data.prompts:
            from .semantics.cache import load_prompts

            prompts = load_prompts(cfg.data.prompts)
        self.val_source = next(iter(cfg.data.sources.values()))
        self.transform = PairTransform(self.hand_model, tokenizer, settings, prompts, cfg.data.dataset or self.val_source.kind,
                                       cfg.data.empty_prompt_prob, cfg.train.seed, condition)  # fmt: skip
        return build_mixed_loader(cfg.data, self.hand_model, self.dist.rank, self.dist.world_size, self.transform)

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        self.transform.epoch = epoch  # before the epoch's iterator starts its workers


class GeneratorTrainer(PairLoop):
    """The shared loop (handrecon.engine.loop) on the denoising loss of the ControlNet."""

    desc = "synth train"

    def __init__(self, cfg: GeneratorExperiment, resume: bool = False, progress: bool = True):
        super().__init__(cfg, resume, progress)
        m = cfg.model
        if m.controlnet is not None and self.dist.is_main:
            start = read_settings(m.controlnet).to_dict()
            differ = {k: (v, start[k]) for k, v in cfg.generator.to_dict().items() if start[k] != v and not (k == "resolution" and v is None)}
            if differ:
                shown = ", ".join(f"{k}={v!r} (ControlNet: {was!r})" for k, (v, was) in differ.items())
                print(f"training {m.controlnet} further with this run's generator settings: {shown}", file=sys.stderr, flush=True)
        if m.base_dtype == "fp16" and self.device.type != "cuda":
            raise UserError(f"model.base_dtype=fp16 needs a CUDA device (device is {self.device}); use bf16 or fp32")
        self.parts = load_components(m.base, m.controlnet, cfg.train.seed, **cfg.generator.fusion())
        self.settings = resolve_resolution(cfg.generator, self.parts)  # what every checkpoint's controlnet/ records
        g = self.settings
        for name in ("vae", "text_encoder", "unet"):  # cast after the ControlNet copied the UNet's fp32 weights
            # torch's `to`: diffusers' own warns about modules kept in fp32 at every dtype cast, even where it names none
            torch.nn.Module.to(getattr(self.parts, name), self.device, BASE_DTYPES[m.base_dtype]).requires_grad_(False).eval()
        self.controlnet = self.parts.controlnet.to(self.device)
        if m.gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
            self.parts.unet.enable_gradient_checkpointing()
        self.context = HandTokenContext()
        if g.hand_bias:
            for name in HAND_BIAS_TARGETS[g.hand_bias_targets]:
                install_hand_bias(getattr(self.parts, name), self.context, g.hand_bias, g.hand_bias_uncond)

        self.setup_loop(self.controlnet, *self.setup_pairs(self.parts.tokenizer, g))

    def check_step(self) -> dict[str, float]:
        """One optimizer step (`optim.grad_accum` micro-batches of the configured batch size) from
        the start of the epoch, timed: seconds loading the batches (`data_s`) and in forward,
        backward and the optimizer (`compute_s`), the mean `loss`. The weights and the optimizer
        move; nothing is saved."""
        accum = self.cfg.optim.grad_accum
        self.train_mode()
        self.start_epoch(self.epoch)
        batches = iter(self.loader)
        data_s = compute_s = 0.0
        losses = []
        try:
            for index in range(accum):
                start = time.perf_counter()
                batch = next(batches)
                data_s += time.perf_counter() - start
                start = time.perf_counter()
                losses.append(self._forward_backward(batch, sync=index == accum - 1, index=index)["loss"])
                _synchronize(self.device)
                compute_s += time.perf_counter() - start
            start = time.perf_counter()
            self._optimizer_step()
            _synchronize(self.device)
            compute_s += time.perf_counter() - start
        finally:
            del batches  # its workers stop
        return {"data_s": data_s, "compute_s": compute_s, "loss": float(torch.stack(losses).float().mean())}

    def load_weights(self, checkpoint: Path) -> None:
        from .models import FusionControlNetModel

        saved = FusionControlNetModel.from_pretrained(checkpoint / "controlnet", local_files_only=True)
        self.controlnet.load_state_dict(saved.state_dict())

    def write_checkpoint(self, state: dict, config_yaml: str) -> None:
        def write(folder: Path) -> None:
            self.controlnet.save_pretrained(folder / "controlnet")
            save_settings(self.settings, folder / "controlnet")  # the settings travel with the weights

        ckpt.write_checkpoint(self.run_dir, self.step, write, state, config_yaml)

    def micro_context(self, batch: dict):
        # the hand mask stays set through backward: gradient checkpointing re-runs the attention
        # there, and it must be the biased attention of the forward
        return self.context.use(batch["hand_mask"])

    def losses(self, batch: dict, index: int) -> dict[str, torch.Tensor]:
        generator = step_generator(self.cfg.train.seed, self.step, index, self.dist.rank, self.device)
        with self.autocast():
            return {"loss": denoising_loss(self.parts, self.net, self.context, batch, generator)}

    def validate(self) -> dict[str, float]:
        """A grid of condition | generated | real for the first samples of the first source."""
        if self.dist.is_main:
            from .pipeline import SesaHandPipeline

            t = self.cfg.train
            # the settings this run saves with its ControlNet; the bias processors keep the training context
            pipe = SesaHandPipeline.from_components(self.parts, self.settings)
            pipe.set_progress_bar_config(disable=True)
            reader = build_source(self.val_source, self.hand_model)
            samples = [pipe.crop(reader[i]) for i in range(t.val_samples)]
            prompts = [self.transform.prompt(s) for s in samples]
            steps = {} if t.val_inference_steps is None else {"num_inference_steps": t.val_inference_steps}
            # a frozen base in half precision beside the fp32 ControlNet: the pipeline mixes their dtypes only under autocast
            base = self.cfg.model.base_dtype
            amp = "off" if base == "fp32" else t.amp if t.amp != "off" else base
            self.controlnet.eval()
            try:
                with autocast(self.device, amp):
                    out = pipe.generate(prompts, list(range(t.val_samples)), samples=samples, hand_model=self.hand_model, **steps)
            finally:
                self.controlnet.train()
            grid = np.concatenate([np.concatenate([c, g, s["image"]], 1) for c, g, s in zip(out.conditions, out.images, samples)], 0)
            self.writer.add_image("val/condition_generated_real", grid, self.step, dataformats="HWC")
            atomic_save_image(self.run_dir / "images" / f"step_{self.step:08d}.png", grid)
        barrier(self.dist)
        return {}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_run(cfg: GeneratorExperiment) -> dict[str, Any]:
    """The dry run of ``tools/synth_train.py --check``: everything a run of `cfg` builds (the base
    components, the ControlNet, the optimizer, the data sources and loader), then one optimizer
    step (:meth:`GeneratorTrainer.check_step`). The trainer works in a temporary run folder,
    removed at the end, so `cfg.out` is neither created nor written. Returns the figures:
    `components` (name -> params, dtype, trainable), `trainable` / `frozen` parameter counts,
    `sources` (name -> kind, size), `steps_per_epoch`, `total_steps`, `device`, the step's
    `data_s`, `compute_s` and `loss`, and `peak_memory` (bytes) with `peak_memory_kind` saying
    what was measured."""
    import resource
    import tempfile

    with tempfile.TemporaryDirectory(prefix="synth_check_") as tmp:
        trainer = GeneratorTrainer(dataclasses.replace(cfg, out=str(Path(tmp) / "run")), progress=False)
        try:
            step = trainer.check_step()
        finally:
            if trainer.writer is not None:
                trainer.writer.close()
            trainer.close()
    components = {}
    for name in ("vae", "text_encoder", "unet", "controlnet"):
        params = list(getattr(trainer.parts, name).parameters())
        components[name] = {
            "params": sum(p.numel() for p in params),
            "dtype": str(params[0].dtype).removeprefix("torch."),
            "trainable": any(p.requires_grad for p in params),
        }
    device = trainer.device
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), f"torch.cuda.max_memory_allocated on {device}"
    else:  # ru_maxrss is in KiB on Linux
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "CPU: peak RSS of this process by resource.getrusage, loader workers not counted"
    return {
        "components": components,
        "trainable": sum(c["params"] for c in components.values() if c["trainable"]),
        "frozen": sum(c["params"] for c in components.values() if not c["trainable"]),
        "sources": {name: (cfg.data.sources[name].kind, size) for name, size in trainer.sources.sizes.items()},
        "steps_per_epoch": trainer.steps_per_epoch,
        "total_steps": trainer.total_steps,
        "device": str(device),
        "resolution": trainer.settings.resolution,
        **step,
        "peak_memory": int(peak),
        "peak_memory_kind": kind,
    }
