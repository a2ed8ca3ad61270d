"""Tiny offline text-to-video pipelines: Wan 2.1 (``video``) and CogVideoX (``cogvideox``).

Random weights from small configs and the Unigram tokenizer of :mod:`servers.models.diffusion`
(see there for sizes and how tokenizers are trained); both VAEs compress 8x spatially and
4x in time (frames = 4k + 1).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from servers.models.diffusion import SIZES, BuildResult, _cached, _diffusers, _params, _t5_tokenizer

__all__ = ["BUILDERS", "build_cogvideox", "build_video"]


def _t5_sizes(tokenizer: Any, d_model: int) -> dict[str, Any]:
    """A tiny (UM)T5 text encoder's config: 2 layers of 4 heads, ``tokenizer``'s vocabulary and ids."""
    return {
        "vocab_size": len(tokenizer),
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "pad_token_id": 0,
        "eos_token_id": 1,
    }


def build_video(out: Path | str, *, size: str = "xs", seed: int = 0) -> BuildResult:
    """Write a tiny Wan 2.1 text-to-video pipeline to ``out``; sizes in :data:`SIZES`."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    d = _diffusers()

    t0 = time.perf_counter()
    _, width, layers = SIZES[size]
    heads = 2 if width <= 12 else 4
    d_model = 32
    torch.manual_seed(seed)
    tokenizer = _t5_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(**_t5_sizes(tokenizer, d_model), decoder_start_token_id=0))
    vae = d.AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    transformer = d.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=16,
        out_channels=16,
        text_dim=d_model,
        freq_dim=256,
        ffn_dim=2 * width,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    pipe = d.WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=d.FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
    )
    pipe.save_pretrained(str(out))
    return BuildResult(
        Path(out), "WanPipeline", _params(transformer, vae, text_encoder), time.perf_counter() - t0
    )


def _cogvideox_transformer(d: Any, heads: int, head_dim: int, text_dim: int, layers: int) -> Any:
    """CogVideoXTransformer3D for 8x8 latents of 9 frames (patch 2, temporal compression 4)."""
    return d.CogVideoXTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=text_dim,
        num_layers=layers,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=226,
    )


def _cogvideox_vae(d: Any) -> Any:
    """AutoencoderKLCogVideoX with 4 blocks: spatial factor 8, temporal 4."""
    return d.AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )


def build_cogvideox(out: Path | str, *, size: str = "xs", seed: int = 0) -> BuildResult:
    """Write a tiny CogVideoX text-to-video pipeline to ``out`` (the study's CogVideoX-2B family).

    CogVideoXTransformer3D (heads x head dim divisible by 16, time embedding 2) +
    AutoencoderKLCogVideoX (4 blocks: spatial factor 8, temporal 4; frames = 4k + 1) + a
    T5 text encoder with a Unigram tokenizer. ``max_text_seq_length`` is the pipeline's
    default ``max_sequence_length`` (226), so requests need no extra flag.
    """
    import torch
    from transformers import T5Config, T5EncoderModel

    d = _diffusers()

    t0 = time.perf_counter()
    _, width, layers = SIZES[size]
    heads, head_dim = (4, 8) if width <= 12 else (4, width // 4)
    d_model = 32
    torch.manual_seed(seed)
    tokenizer = _t5_tokenizer()
    text_encoder = T5EncoderModel(T5Config(**_t5_sizes(tokenizer, d_model)))
    transformer = _cogvideox_transformer(d, heads, head_dim, d_model, layers)
    vae = _cogvideox_vae(d)
    pipe = d.CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=d.CogVideoXDDIMScheduler(),
    )
    pipe.save_pretrained(str(out))
    return BuildResult(
        Path(out), "CogVideoXPipeline", _params(transformer, vae, text_encoder), time.perf_counter() - t0
    )


# The registry's builders (servers.models.cli.PROVIDERS): kind -> build(out_dir) -> out_dir.
BUILDERS = {"video": _cached(build_video), "cogvideox": _cached(build_cogvideox)}
