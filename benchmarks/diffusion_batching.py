"""J/image and images/s vs batch size for a diffusion pipeline: the study's batching effect, measured here.

    .venv/bin/python benchmarks/diffusion_batching.py                   # tiny SD on CPU, batch 1,2,4,8
    python3 benchmarks/diffusion_batching.py --pipeline sd15-random --device cuda --dtype float16 \\
        --size 512 --steps 20 --batch-sizes 1,2,4,8,16 --json out.json   # ~1 B params on a GPU

For each batch size: one warm-up call (kernel set-up), then calls back to back
until at least ``--min-seconds`` have passed, with the energy counter read
before and after (whole calls only; the GPU synchronised). J/image = energy /
images; the counter includes static power, which batching amortises.

Energy comes from the sidecar's meters: ``nvml`` (the GPU's total-energy
counter, measured) on CUDA; on CPU ``rapl`` (measured, package energy) where
the powercap files are readable, else ``cpu-model`` (an ESTIMATE: CPU
utilization x a 10-65 W envelope; never a measurement). The table says which.

Pipelines: ``tiny`` is ``jouletrace models build image`` (random weights,
~1.8 M params); ``sd15-random`` is Stable Diffusion 1.5's architecture (UNet
860 M + VAE 84 M + CLIP-L-sized text encoder) with random weights and a
locally trained tokenizer, about 1.07 B parameters, built on the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.meters import make_meter
from sidecar.meters.base import EnergyMeter


def pick_meter(device: str, name: str) -> EnergyMeter:
    """The meter asked for; ``auto``: nvml on CUDA, else rapl if readable, else cpu-model."""
    if name != "auto":
        return make_meter(name)
    if device.startswith("cuda"):
        return make_meter("nvml", devices=device.partition(":")[2] or "0")
    try:
        meter = make_meter("rapl")
        meter.read()
        return meter
    except Exception:
        return make_meter("cpu-model")


def sd15_random(device: str, dtype: Any) -> Any:
    """Stable Diffusion 1.5's architecture with random weights (~1.07 B params), built on ``device``."""
    import importlib

    import torch

    from servers.models.diffusion import _clip_tokenizer, clip_text_encoder, sd_pipeline

    d: Any = importlib.import_module("diffusers")
    tokenizer = _clip_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        unet = d.UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
        vae = d.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = clip_text_encoder(tokenizer, hidden=768, intermediate=3072, layers=12, heads=12)
    pipe = sd_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet)
    return pipe.to(device=device, dtype=dtype)


def load(args: argparse.Namespace) -> tuple[Any, int]:
    """(pipeline, parameter count)."""
    import importlib

    import torch

    dtype = getattr(torch, args.dtype)
    if args.pipeline == "sd15-random":
        pipe = sd15_random(args.device, dtype)
    else:
        from servers.models.diffusion import BUILDERS

        folder = (
            Path(args.model) if args.model else BUILDERS["image"](Path(tempfile.mkdtemp()) / "tiny-image")
        )
        d: Any = importlib.import_module("diffusers")
        pipe = d.DiffusionPipeline.from_pretrained(str(folder), dtype=dtype).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    params = sum(p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
    return pipe, int(params)


def measure(pipe: Any, meter: EnergyMeter, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Energy (J) and time (s) of back-to-back calls of one batch size, after one warm-up call."""
    import torch

    def call() -> None:
        gens = [torch.Generator().manual_seed(k) for k in range(batch)]
        pipe(
            prompt=["a photograph of an astronaut riding a horse"] * batch,
            height=args.size,
            width=args.size,
            num_inference_steps=args.steps,
            guidance_scale=7.5,
            generator=gens,
            output_type="np",
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    call()
    r0 = meter.read()
    calls = 0
    while True:
        call()
        calls += 1
        elapsed = time.monotonic() - r0.t_s
        if calls >= 2 and elapsed >= args.min_seconds:
            break
    r1 = meter.read()
    energy_j = sum(r1.energy_j) - sum(r0.energy_j)
    seconds = r1.t_s - r0.t_s
    images = calls * batch
    return {
        "batch": batch,
        "calls": calls,
        "seconds": seconds,
        "energy_j": energy_j,
        "j_per_image": energy_j / images,
        "images_per_s": images / seconds,
        "power_w": energy_j / seconds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", choices=["tiny", "sd15-random"], default="tiny")
    p.add_argument("--model", default="", help="tiny: a built folder (default: build one in a temp dir)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--size", type=int, default=64, help="width = height (px)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps")
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per batch size (at least)")
    p.add_argument("--meter", default="auto", help="auto, nvml, rapl, cpu-model")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--json", default="", help="also write the rows here")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    meter = pick_meter(args.device, args.meter)
    t0 = time.monotonic()
    pipe, params = load(args)
    print(
        f"pipeline {args.pipeline}: {params / 1e6:.1f} M params, {args.device} {args.dtype}, "
        f"{args.size}x{args.size}, {args.steps} steps, CFG on; built/loaded in {time.monotonic() - t0:.1f} s"
    )
    print(f"energy: meter {meter.source.value!r} ({', '.join(d.name for d in meter.devices)})")
    meta = {k: v for k, v in vars(args).items() if k != "json"}
    meta.update(params=params, energy_source=meter.source.value, devices=[d.name for d in meter.devices])
    print(f"{'batch':>5} {'J/image':>10} {'vs b=1':>7} {'images/s':>9} {'vs b=1':>7} {'W':>7} {'calls':>5}")
    rows: list[dict[str, float]] = []
    for b in args.batch_sizes.split(","):
        r = measure(pipe, meter, int(b), args)
        rows.append(r)
        r["j_ratio"] = r["j_per_image"] / rows[0]["j_per_image"]
        r["speed_ratio"] = r["images_per_s"] / rows[0]["images_per_s"]
        print(
            f"{r['batch']:>5} {r['j_per_image']:>10.3f} {r['j_ratio']:>7.2f} {r['images_per_s']:>9.2f} "
            f"{r['speed_ratio']:>7.2f} {r['power_w']:>7.1f} {r['calls']:>5}",
            flush=True,
        )
        if args.json:  # after every row, so a run cut short still leaves its table
            Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    meter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
