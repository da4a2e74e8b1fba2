"""A diffusers ControlNet with hierarchical structural fusion.

During its own forward, the ControlNet's self-attention maps at several resolutions (down and
mid blocks; r in {64, 32, 16, 8} for Stable Diffusion 1.5 at 512 px) are captured pooled to
the fusion grid, aggregated into psi' and applied to every control feature before its zero
convolution: ``f' = Z(f_c (x) psi') + f`` (the ``+ f`` is the UNet adding the residual).
All maps exist before the first zero convolution runs, so one forward is enough. The fusion
has no parameters: the zero convolutions and the encoder copy learn to use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config

from synth.attention import PooledSelfAttentionCapture, attention_layers

from .fusion import aggregate_maps, fuse_features

__all__ = ["FUSION_CONFIG_KEYS", "FusionControlNetModel"]

#: Configuration keys added to ControlNetModel's, with their defaults.
FUSION_CONFIG_KEYS: dict[str, object] = {
    "structural_fusion": True,
    "fusion_resolutions": None,
    "fusion_resolution": 8,
    "fusion_detach": True,
    "fusion_max_elements": None,
}

# Blocks whose self-attention feeds the fusion: the encoder copy and its middle block.
_FUSION_BLOCKS = ("down_blocks.", "mid_block.")


def _check_fusion_config(
    fusion_resolutions, fusion_resolution, fusion_max_elements
) -> tuple[int, ...] | None:
    if fusion_resolutions is not None:
        fusion_resolutions = tuple(int(r) for r in fusion_resolutions)
        if not fusion_resolutions or min(fusion_resolutions) < 1:
            raise ValueError(f"fusion_resolutions must be None or positive sizes, got {fusion_resolutions}")
    if int(fusion_resolution) < 1:
        raise ValueError(f"fusion_resolution must be positive, got {fusion_resolution}")
    if fusion_max_elements is not None and int(fusion_max_elements) < 1:
        raise ValueError(f"fusion_max_elements must be positive, got {fusion_max_elements}")
    return fusion_resolutions


class FusionControlNetModel(ControlNetModel):
    """ControlNetModel plus hierarchical structural fusion (configuration keys below; every
    other argument is ControlNetModel's).

    Args:
        structural_fusion: apply the fusion. Off, the model computes exactly what
            ``ControlNetModel`` computes with the same weights.
        fusion_resolutions: resolutions r (grid height of a layer, in latent cells) whose
            self-attention maps enter psi'; None takes every self-attention layer of the down
            and mid blocks (r in {64, 32, 16, 8} for SD 1.5 at 512 px).
        fusion_resolution: height of the fusion grid, in cells (width follows the latent's
            aspect ratio). Maps are unified to it by max pooling (M); the default 8 is the
            coarsest SD 1.5 map, so every map is pooled, none repeated.
        fusion_detach: maps carry no gradient (default). Otherwise gradients reach q and k
            through the maps, chunks being recomputed in backward to bound memory.
        fusion_max_elements: chunk budget of the map computation (values per chunk of
            probabilities); None picks it by device (:func:`synth.attention.default_max_elements`:
            2**24 float32 = 64 MiB on CUDA, 8 MiB on CPU).

    psi' reaches each control output by the rule of :func:`synth.models.fusion.fuse_features`:
    on the fusion grid it is ``f_c (x) psi'``; at finer resolutions the cell means of f_c are
    replaced by their psi'-mixed values and the finer detail is kept, so the mesh edges that
    the high-resolution residuals carry survive; at coarser ones psi' is averaged down.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 3,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        only_cross_attention: bool | tuple[bool] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1280,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | tuple[int, ...] = 8,
        num_attention_heads: int | tuple[int, ...] | None = None,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        projection_class_embeddings_input_dim: int | None = None,
        controlnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: tuple[int, ...] | None = (16, 32, 96, 256),
        global_pool_conditions: bool = False,
        addition_embed_type_num_heads: int = 64,
        structural_fusion: bool = True,
        fusion_resolutions: tuple[int, ...] | None = None,
        fusion_resolution: int = 8,
        fusion_detach: bool = True,
        fusion_max_elements: int | None = None,
    ):
        super().__init__(
            in_channels=in_channels,
            conditioning_channels=conditioning_channels,
            flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift,
            down_block_types=down_block_types,
            mid_block_type=mid_block_type,
            only_cross_attention=only_cross_attention,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            encoder_hid_dim=encoder_hid_dim,
            encoder_hid_dim_type=encoder_hid_dim_type,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            use_linear_projection=use_linear_projection,
            class_embed_type=class_embed_type,
            addition_embed_type=addition_embed_type,
            addition_time_embed_dim=addition_time_embed_dim,
            num_class_embeds=num_class_embeds,
            upcast_attention=upcast_attention,
            resnet_time_scale_shift=resnet_time_scale_shift,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            controlnet_conditioning_channel_order=controlnet_conditioning_channel_order,
            conditioning_embedding_out_channels=conditioning_embedding_out_channels,
            global_pool_conditions=global_pool_conditions,
            addition_embed_type_num_heads=addition_embed_type_num_heads,
        )
        _check_fusion_config(fusion_resolutions, fusion_resolution, fusion_max_elements)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        controlnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: tuple[int, ...] | None = (16, 32, 96, 256),
        load_weights_from_unet: bool = True,
        conditioning_channels: int = 3,
        **fusion,
    ) -> FusionControlNetModel:
        """ControlNetModel.from_unet, plus fusion keys (see the class) in `fusion`."""
        model = super().from_unet(
            unet,
            controlnet_conditioning_channel_order=controlnet_conditioning_channel_order,
            conditioning_embedding_out_channels=conditioning_embedding_out_channels,
            load_weights_from_unet=load_weights_from_unet,
            conditioning_channels=conditioning_channels,
        )
        model.set_fusion(**fusion)
        return model

    @classmethod
    def from_controlnet(cls, controlnet: ControlNetModel, **fusion) -> FusionControlNetModel:
        """The same network and weights as a diffusers `controlnet`, with fusion keys in `fusion`."""
        model = cls.from_config({**dict(controlnet.config), **fusion})
        model.load_state_dict(controlnet.state_dict())
        model.to(controlnet.device)
        # only cast when needed: diffusers warns on every .to(dtype=...)
        return model if controlnet.dtype == model.dtype else model.to(controlnet.dtype)

    def set_fusion(self, **fusion) -> None:
        """Change fusion keys (see the class) in the configuration; they act from the next forward."""
        unknown = set(fusion) - set(FUSION_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown fusion keys {sorted(unknown)}; valid: {sorted(FUSION_CONFIG_KEYS)}")
        merged = {key: self.config.get(key, default) for key, default in FUSION_CONFIG_KEYS.items()} | fusion
        resolutions = _check_fusion_config(
            merged["fusion_resolutions"], merged["fusion_resolution"], merged["fusion_max_elements"]
        )
        self.register_to_config(**(merged | {"fusion_resolutions": resolutions}))

    # ------------------------------------------------------------------ forward

    def fusion_layers(self) -> dict[str, object]:
        """The self-attention layers whose maps can enter psi' (down and mid blocks)."""
        return {n: m for n, m in attention_layers(self, "self").items() if n.startswith(_FUSION_BLOCKS)}

    def fusion_grid(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the fusion grid for (H, W) latents."""
        rows = int(self.config.fusion_resolution)
        return rows, max(1, round(rows * latent_hw[1] / latent_hw[0]))

    def forward(self, sample: torch.Tensor, *args, **kwargs):
        """ControlNetModel.forward (same arguments and outputs), with the fusion if configured."""
        if not self.config.get("structural_fusion", False):
            return super().forward(sample, *args, **kwargs)
        if self.is_gradient_checkpointing and not self.config.fusion_detach and torch.is_grad_enabled():
            # the capture hooks are gone when backward recomputes the checkpointed blocks
            raise ValueError("fusion_detach=False does not work with gradient checkpointing; set fusion_detach=True or turn checkpointing off")
        with self._fusion(tuple(sample.shape[-2:])):
            return super().forward(sample, *args, **kwargs)

    @contextmanager
    def _fusion(self, latent_hw: tuple[int, int]) -> Iterator[None]:
        grid = self.fusion_grid(latent_hw)
        capture = PooledSelfAttentionCapture(
            self.fusion_layers(),
            latent_hw,
            grid,
            detach=bool(self.config.fusion_detach),
            max_elements=self.config.fusion_max_elements,
        )
        wanted = self.config.fusion_resolutions
        psi: list[torch.Tensor] = []  # psi' of this forward, built at the first zero convolution

        def fused(module, args):
            if not psi:
                psi.append(self._aggregate(capture, wanted))
            return (fuse_features(args[0], psi[0], grid),)

        with ExitStack() as stack:
            stack.enter_context(capture)
            for zero_conv in (*self.controlnet_down_blocks, self.controlnet_mid_block):
                stack.callback(zero_conv.register_forward_pre_hook(fused).remove)
            yield

    @staticmethod
    def _aggregate(capture: PooledSelfAttentionCapture, wanted) -> torch.Tensor:
        names = [n for n in capture.maps if wanted is None or capture.grids[n][0] in wanted]
        if not names:
            seen = sorted({g[0] for g in capture.grids.values()})
            raise ValueError(
                f"structural fusion found no self-attention maps at resolutions {wanted} "
                f"(captured: {seen}); fused QKV projections are not supported"
            )
        return aggregate_maps([capture.maps[n] for n in names], [capture.grids[n][0] for n in names])
