"""Request factories: each task's API and body; lengths enforced; media that decode."""

from __future__ import annotations

import base64
import io
import itertools
import struct

import numpy as np
import pytest
from PIL import Image

from loadgen.factories import FactoryOptions, make_requests
from loadgen.media import jpeg_image, video_clip
from loadgen.prompts import PromptBuilder
from loadgen.tasks import load_tasks, scale_task

TASKS = load_tasks()


def _make(
    task: str, n: int = 20, scale: float = 1.0, max_model_len: int | None = None, **opts: object
) -> list:
    spec = scale_task(TASKS[task], scale, max_model_len)
    rng = np.random.default_rng(0)
    options = FactoryOptions(model="m", max_model_len=max_model_len, **opts)  # type: ignore[arg-type]
    return make_requests(spec, n, rng, PromptBuilder(rng), options, "t")


def test_the_seven_tasks_are_there_with_their_apis() -> None:
    assert {t: s.api for t, s in TASKS.items()} == {
        "lm-arena-chat": "chat",
        "gpqa": "chat",
        "sourcegraph-fim": "completions",
        "image-chat": "chat",
        "video-chat": "chat",
        "text-to-image": "images",
        "text-to-video": "videos",
    }


def test_llm_requests_enforce_the_drawn_length_with_max_tokens_and_ignore_eos_and_stream() -> None:
    for r in _make("lm-arena-chat"):
        assert r.body["max_tokens"] == r.target_output_tokens
        assert r.body["ignore_eos"] is True and r.body["stream"] is True
        assert r.body["stream_options"] == {"include_usage": True}
        assert (r.body["temperature"], r.body["top_p"]) == (0.8, 0.95)
    assert all("ignore_eos" not in r.body for r in _make("gpqa", ignore_eos=False))


def test_chat_histories_alternate_roles_and_end_with_the_user() -> None:
    turns = [len(r.body["messages"]) for r in _make("lm-arena-chat", 200)]
    assert max(turns) > 1  # some requests carry a history
    for r in _make("lm-arena-chat", 50):
        roles = [m["role"] for m in r.body["messages"]]
        assert roles[-1] == "user" and all(a != b for a, b in itertools.pairwise(roles))


def test_prompts_have_about_the_drawn_number_of_words_per_token_ratio() -> None:
    for r in _make("gpqa", 10):
        words = len(r.body["messages"][0]["content"].split())
        assert words == pytest.approx(r.target_prompt_tokens + 10, abs=12)  # + the instruction line


def test_code_completion_goes_to_completions_with_the_fim_template() -> None:
    (r,) = _make("sourcegraph-fim", 1)
    assert r.path == "/v1/completions" and "messages" not in r.body
    p = r.body["prompt"]
    assert p.startswith("<|fim_prefix|>") and "<|fim_suffix|>" in p and p.endswith("<|fim_middle|>")


def test_a_context_limit_keeps_prompt_plus_output_inside_it() -> None:
    for r in _make("gpqa", 50, scale=0.05, max_model_len=512):
        assert r.target_prompt_tokens + r.body["max_tokens"] <= 512


def test_image_and_video_chat_attach_generated_media() -> None:
    (img,) = _make("image-chat", 1, scale=0.05)
    part = img.body["messages"][0]["content"][1]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    (vid,) = _make("video-chat", 1, scale=0.05)
    part = vid.body["messages"][0]["content"][1]
    assert part["type"] == "video_url" and part["video_url"]["url"].startswith("data:video/x-msvideo;base64,")


def test_diffusion_requests_carry_the_study_parameters_scaled_to_server_limits() -> None:
    (img,) = _make("text-to-image", 1)
    assert (img.body["size"], img.body["steps"]) == ("1024x1024", 20) and "model" not in img.body
    (vid,) = _make("text-to-video", 1, scale=0.1)
    w, h = (int(x) for x in vid.body["size"].split("x"))
    assert w % 16 == 0 and h % 16 == 0 and w >= 64
    assert (vid.body["num_frames"] - 1) % 4 == 0 and vid.body["num_frames"] >= 5
    assert vid.body["steps"] == 5 and vid.unit == "video"


def test_request_ids_are_unique_and_the_draws_are_deterministic() -> None:
    a, b = _make("lm-arena-chat", 30), _make("lm-arena-chat", 30)
    assert len({r.id for r in a}) == 30
    assert [r.body for r in a] == [r.body for r in b]


def test_the_jpeg_decodes_to_the_asked_size() -> None:
    img = Image.open(io.BytesIO(jpeg_image(3, 48)))
    assert img.format == "JPEG" and img.size == (48, 48)


def test_the_video_clip_is_an_avi_with_32_mjpeg_frames() -> None:
    clip = video_clip(1, 32)
    assert clip[:4] == b"RIFF" and clip[8:12] == b"AVI "
    assert struct.unpack("<I", clip[4:8])[0] == len(clip) - 8
    assert clip.count(b"00dc") == 2 * 32  # one chunk per frame plus one index entry each
    first = clip.index(b"00dc") + 8
    assert Image.open(io.BytesIO(clip[first:])).format == "JPEG"
    assert base64.b64encode(clip)  # fits a data: URL
