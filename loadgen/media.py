"""Generated media for Image Chat and Video Chat: a JPEG, and a 32-frame MJPEG AVI clip.

Both are deterministic in the seed and sent as ``data:`` URLs in the chat
message (``image_url`` / ``video_url`` parts, as vLLM's OpenAI server accepts).
The clip is Motion-JPEG in an AVI container, written here by hand (RIFF chunks:
``hdrl``/``avih``/``strl``/``strh``/``strf``, ``movi`` with one ``00dc`` chunk per
frame, ``idx1``), so no video codec library is needed on the client; OpenCV,
which vLLM uses to decode video, reads MJPEG AVI with its built-in backend.
"""

from __future__ import annotations

import base64
import io
import struct

import numpy as np

__all__ = ["avi_mjpeg", "data_url", "jpeg_image", "video_clip"]


def _frame(rng: np.random.Generator, side_px: int, phase: float) -> bytes:
    from PIL import Image  # Pillow comes with matplotlib (the loadgen extra)

    y, x = np.mgrid[0:side_px, 0:side_px] / max(1, side_px - 1)
    base = rng.uniform(0, 255, size=3)
    r = (base[0] + 120 * np.sin(6.28 * (x + phase))) % 256
    g = (base[1] + 120 * y) % 256
    b = (base[2] + 60 * np.cos(6.28 * (x * y + phase))) % 256
    noise = rng.normal(0, 12, size=(side_px, side_px, 3))
    pixels = np.clip(np.stack([r, g, b], axis=-1) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def jpeg_image(seed: int, side_px: int) -> bytes:
    """A ``side_px`` x ``side_px`` JPEG (gradient plus noise; bytes)."""
    return _frame(np.random.default_rng(seed), side_px, 0.0)


def _chunk(tag: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return tag + struct.pack("<I", len(payload)) + payload + pad


def _list(kind: bytes, payload: bytes) -> bytes:
    return _chunk(b"LIST", kind + payload)


def avi_mjpeg(frames: list[bytes], width: int, height: int, fps: int) -> bytes:
    """Wrap JPEG frames into a Motion-JPEG AVI file (bytes)."""
    n = len(frames)
    max_frame = max(len(f) for f in frames)
    avih = struct.pack(
        "<IIIIIIIIII4I",
        1_000_000 // fps,
        max_frame * fps,
        0,
        0x10,  # us/frame, max bytes/s, padding, AVIF_HASINDEX
        n,
        0,
        1,
        max_frame,
        width,
        height,
        0,
        0,
        0,
        0,
    )
    strh = struct.pack(
        "<4s4sIHHIIIIIIIIhhhh",
        b"vids",
        b"MJPG",
        0,
        0,
        0,
        0,
        1,
        fps,
        0,
        n,
        max_frame,
        0xFFFFFFFF,
        0,
        0,
        0,
        width,
        height,
    )
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    hdrl = _list(
        b"hdrl", _chunk(b"avih", avih) + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf))
    )
    movi_body = b""
    index = b""
    offset = 4  # offsets in idx1 count from the 'movi' tag
    for f in frames:
        chunk = _chunk(b"00dc", f)
        index += struct.pack("<4sIII", b"00dc", 0x10, offset, len(f))
        offset += len(chunk)
        movi_body += chunk
    body = b"AVI " + hdrl + _list(b"movi", movi_body) + _chunk(b"idx1", index)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def video_clip(seed: int, side_px: int, frames: int = 32, fps: int = 8) -> bytes:
    """A ``frames``-frame MJPEG AVI clip of moving gradients (bytes)."""
    rng = np.random.default_rng(seed)
    jpegs = [_frame(rng, side_px, i / frames) for i in range(frames)]
    return avi_mjpeg(jpegs, side_px, side_px, fps)


def data_url(payload: bytes, mime: str) -> str:
    """``data:<mime>;base64,...``"""
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
