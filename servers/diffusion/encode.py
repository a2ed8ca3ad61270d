"""Outputs -> bytes: PNG for images, MP4 (imageio-ffmpeg) or GIF (PIL) for videos."""

from __future__ import annotations

import base64
import importlib
import importlib.util
import io
from typing import Any

import numpy as np

__all__ = ["MIME", "encode_image", "encode_video", "video_formats"]

MIME = {"png": "image/png", "mp4": "video/mp4", "gif": "image/gif"}


def video_formats() -> tuple[str, ...]:
    """Containers this install can write, preferred first (MP4 needs imageio + imageio-ffmpeg)."""
    has_mp4 = all(importlib.util.find_spec(m) is not None for m in ("imageio", "imageio_ffmpeg"))
    return ("mp4", "gif") if has_mp4 else ("gif",)


def encode_image(image: Any) -> bytes:
    """A PIL image (or HxWx3 array in [0, 1]) as PNG bytes."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(_to_uint8(np.asarray(image)))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    if frames.dtype == np.uint8:
        return frames
    out: np.ndarray = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    return out


def encode_video(frames: Any, fps: int, container: str) -> bytes:
    """Frames ``(F, H, W, 3)`` (float in [0, 1] or uint8) as MP4 or GIF bytes at ``fps``."""
    data = _to_uint8(np.asarray(frames))
    if container == "mp4":
        imageio: Any = importlib.import_module("imageio.v2")

        buf = io.BytesIO()
        # macro_block_size=1: tiny test sizes (64 px) need no padding to 16
        with imageio.get_writer(buf, format="mp4", fps=fps, macro_block_size=1) as writer:
            for frame in data:
                writer.append_data(frame)
        return buf.getvalue()
    from PIL import Image

    images = [Image.fromarray(f) for f in data]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
