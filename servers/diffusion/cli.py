"""``jouletrace diffusion serve`` (also ``python -m servers.diffusion [serve]``): the diffusion server.

    jouletrace diffusion serve --model models/tiny-sd --model models/tiny-wan \\
        --device cpu --otlp-endpoint localhost:4317 --port 8000

``--model`` is repeatable (one image and one video pipeline at most; the kind
comes from the folder's ``model_index.json``). ``--otlp-endpoint`` defaults to
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``;
empty sends no spans.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]

log = logging.getLogger("jouletrace.diffusion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from servers.diffusion.shapes import Limits

    d = Limits()
    parser.add_argument(
        "action",
        nargs="?",
        choices=["serve", "demo"],
        default="serve",
        help="serve (default), or demo: tiny pipelines + sidecar, a few images and a video with their joules",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="pipeline folder or hub id; repeat for one image and one video model (serve)",
    )
    parser.add_argument("--out", default="demo-output", help="demo: where images and videos are written")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    env = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    )
    parser.add_argument(
        "--otlp-endpoint", default=env, help="the sidecar's OTLP/gRPC endpoint, e.g. localhost:4317"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=8, help="items (images/videos) per pipeline call"
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=50.0, help="ms the oldest request waits for company"
    )
    parser.add_argument("--max-queue-items", type=int, default=64, help="queued items before 429")
    parser.add_argument(
        "--default-steps", type=int, default=20, help="denoising steps when a request names none"
    )
    parser.add_argument("--max-steps", type=int, default=d.max_steps, help="largest steps a request may ask")
    parser.add_argument("--max-frames", type=int, default=d.max_frames, help="largest num_frames (4k+1)")
    parser.add_argument("--max-side", type=int, default=d.max_side_px, help="largest width/height (px)")
    parser.add_argument("--min-side", type=int, default=d.min_side_px, help="smallest width/height (px)")
    parser.add_argument(
        "--max-sequence-length",
        type=int,
        default=0,
        help="text tokens for video pipelines that take it (0: the pipeline's default)",
    )
    parser.add_argument("--output-dir", default="", help="folder for response_format=url files ('' : none)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    if args.action == "demo":
        from servers.diffusion.demo import run_demo
        from servers.models.cli import default_dir

        return run_demo(Path(args.out), default_dir("image").parent)  # where `models build` puts them
    if not args.model:
        print(
            "jouletrace diffusion serve: --model is required (a pipeline folder or hub id)", file=sys.stderr
        )
        return 2
    import uvicorn

    from servers.diffusion.app import ServerSettings, make_app
    from servers.diffusion.pipelines import PipelineRunner, load_pipeline
    from servers.diffusion.shapes import Limits
    from servers.diffusion.tracing import Tracing

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        pipelines = [load_pipeline(m, args.device, args.dtype) for m in args.model]
    except (OSError, ValueError) as err:  # no such folder, not a pipeline, no hub here: one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(
            f"jouletrace diffusion serve: --model: cannot load a diffusers pipeline: {first} "
            "(a folder from `jouletrace models build image`, printed by it, or a Hugging Face id)",
            file=sys.stderr,
        )
        return 2
    runner = PipelineRunner(pipelines, max_sequence_length=args.max_sequence_length or None)
    limits = Limits(
        max_n=args.max_batch_size,
        max_steps=args.max_steps,
        max_frames=args.max_frames,
        max_side_px=args.max_side,
        min_side_px=args.min_side,
    )
    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    settings = ServerSettings(
        limits=limits,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue_items=args.max_queue_items,
        default_steps=args.default_steps,
        output_dir=output_dir,
    )
    app = make_app(runner, settings, Tracing(args.otlp_endpoint or None))
    log.info(
        "serving %s on %s:%d, spans to %s", runner.models, args.host, args.port, args.otlp_endpoint or "-"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
