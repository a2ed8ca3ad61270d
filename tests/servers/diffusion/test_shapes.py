"""Request bodies through the pydantic models: strict JSON types, the server's limits, clear field errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from servers.diffusion.shapes import InvalidRequest, Limits, parse_image, parse_video

LIMITS = Limits(max_n=4, max_steps=50, max_frames=33, max_side_px=256)


def image(**change: Any) -> Any:
    return parse_image({"prompt": "a cat", "size": "64x64", **change}, "img", LIMITS, default_steps=4)


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"steps": "3"}, "steps", "valid integer"),  # no string-to-int coercion
        ({"n": True}, "n", "valid integer"),  # a boolean is not a count
        ({"n": 2.0}, "n", "valid integer"),
        ({"guidance": "7"}, "guidance", "valid number"),
        ({"guidance_scale": 99}, "guidance_scale", "0..30"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"response_format": "png"}, "response_format", "'b64_json' or 'url'"),
        ({"prompt": None}, "prompt", "valid string"),
        ({"size": 64}, "size", "valid string"),
    ],
)
def test_a_wrong_type_or_value_names_the_field(change: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        image(**change)
    assert err.value.field == field and err.value.status == 400
    assert str(err.value).startswith(f"{field}: ") and says in str(err.value)


def test_a_missing_prompt_is_named() -> None:
    with pytest.raises(InvalidRequest, match=r"^prompt: Field required"):
        parse_image({"size": "64x64"}, "img", LIMITS)


def test_nan_guidance_from_pythons_lenient_json_is_refused() -> None:
    body = json.loads('{"prompt": "a cat", "guidance": NaN}')
    with pytest.raises(InvalidRequest, match=r"^guidance: .*finite"):
        parse_image(body, "img", LIMITS)


def test_unknown_fields_are_ignored_and_defaults_filled() -> None:
    spec = image(user="someone", quality="hd")
    assert (spec.n, spec.response_format, spec.seed) == (1, "b64_json", None)
    assert (spec.shape.width, spec.shape.height, spec.shape.steps, spec.shape.guidance) == (64, 64, 4, 7.5)


def test_guidance_scale_is_accepted_as_guidance() -> None:
    assert image(guidance_scale=3).shape.guidance == 3.0


def test_a_video_body_gets_its_frames_fps_and_container() -> None:
    spec = parse_video(
        {"prompt": "a cat", "size": "64x64", "num_frames": 9, "fps": 8, "format": "gif"},
        "vid",
        LIMITS,
        video_formats=("mp4", "gif"),
    )
    assert (spec.shape.frames, spec.fps, spec.container, spec.n) == (9, 8, "gif", 1)


def test_a_model_that_is_not_served_is_a_404() -> None:
    with pytest.raises(InvalidRequest) as err:
        image(model="other")
    assert err.value.status == 404 and err.value.field == "model"
