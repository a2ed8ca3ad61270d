"""Tiny offline diffusion pipelines: random weights from small configs, local tokenizers.

``jouletrace models build image|video|cogvideox`` writes a folder that
``DiffusionPipeline.from_pretrained`` loads back, with no download. This module builds
``image`` and holds what every builder shares (sizes, tokenizers, the cached build);
:mod:`servers.models.video` builds ``video`` and ``cogvideox``:

* ``image``: a Stable-Diffusion-style pipeline (UNet2DCondition + AutoencoderKL
  + CLIP text encoder with a CLIP-style BPE tokenizer); ~1 M UNet parameters at
  size ``xs``, 4x larger per size step. VAE scale factor 2.
* ``video``: a Wan 2.1 pipeline (WanTransformer3D + AutoencoderKLWan + UMT5
  text encoder with a Unigram tokenizer); ~0.1 M parameters at ``xs``. VAE
  scale factor 8 spatially, 4 in time (frames = 4k + 1).
* ``cogvideox``: a CogVideoX pipeline (CogVideoXTransformer3D + AutoencoderKLCogVideoX
  + T5 text encoder with the same Unigram tokenizer), the study's CogVideoX-2B / 1.5-5B
  family; same VAE factors as Wan.

Tokenizers are trained on a fixed slice of the Python standard library's source
(sorted file names, so the vocabulary is the same on every run of one Python).
Images and videos from random weights are noise; shapes, work and timings are real.
Building takes a few seconds on two CPU cores; the folders are a few MB.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BUILDERS", "SIZES", "BuildResult", "build_image", "corpus_files"]

# size -> (UNet block channels for image, DiT heads x head dim for video, layers)
SIZES: dict[str, tuple[tuple[int, int], int, int]] = {
    "xs": ((32, 64), 12, 2),
    "s": ((64, 128), 32, 2),
    "m": ((128, 256), 64, 4),
}


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What was written: folder, pipeline class, parameter count, seconds spent."""

    path: Path
    pipeline: str
    parameters: int
    seconds: float


def corpus_files(count: int) -> list[Path]:
    """``count`` standard-library source files, sorted by name (deterministic per Python version)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(stdlib.glob("*.py"))[:count]


def _texts(count: int) -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace") for p in corpus_files(count)]


def _clip_tokenizer(vocab_size: int = 1000) -> Any:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    split = Regex(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(split, behavior="removed", invert=True), ByteLevel(add_prefix_space=False)]
    )
    alphabet = ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=alphabet + [c + "</w>" for c in alphabet],
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(_texts(40), trainer)
    model = json.loads(tok.to_str())["model"]
    merges: Any = [tuple(x) for x in model["merges"]]  # transformers 5 wants tuples, not "a b" strings
    return CLIPTokenizer(vocab=model["vocab"], merges=merges, model_max_length=77)


def _t5_tokenizer(vocab_size: int = 1000) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(_texts(12), trainer)
    vocab = [tuple(x) for x in json.loads(tok.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _diffusers() -> Any:
    """The diffusers module, untyped (its classes are built from configs at run time)."""
    return importlib.import_module("diffusers")


def _params(*modules: Any) -> int:
    return int(sum(p.numel() for m in modules for p in m.parameters()))


def clip_text_encoder(tokenizer: Any, *, hidden: int, intermediate: int, layers: int, heads: int) -> Any:
    """A random-init CLIP text encoder sized for ``tokenizer`` (77-token context)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def sd_pipeline(*, vae: Any, text_encoder: Any, tokenizer: Any, unet: Any) -> Any:
    """A Stable-Diffusion pipeline over the given parts, with SD's DDIM scheduler settings."""
    d = _diffusers()
    scheduler = d.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return d.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_image(out: Path | str, *, size: str = "xs", seed: int = 0) -> BuildResult:
    """Write a tiny Stable-Diffusion pipeline to ``out``; sizes in :data:`SIZES`."""
    import torch

    d = _diffusers()

    t0 = time.perf_counter()
    channels, _, _ = SIZES[size]
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer()
    unet = d.UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = d.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8,
    )
    text_encoder = clip_text_encoder(tokenizer, hidden=64, intermediate=128, layers=2, heads=4)
    pipe = sd_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet)
    pipe.save_pretrained(str(out))
    return BuildResult(
        Path(out), "StableDiffusionPipeline", _params(unet, vae, text_encoder), time.perf_counter() - t0
    )


def _cached(build: Callable[..., BuildResult]) -> Callable[[Path], Path]:
    """A registry builder: ``out`` if complete, else build into a temp folder and rename it."""

    def builder(out: Path) -> Path:
        out = Path(out)
        if (out / "model_index.json").is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            build(tmp)
            if out.exists():  # an incomplete folder from an earlier, interrupted build
                shutil.rmtree(out)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    return builder


# The registry's builders (servers.models.cli.PROVIDERS): kind -> build(out_dir) -> out_dir.
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "image": _cached(build_image),
}
