"""A run's settings, one typed object; every field is a ``jouletrace loadgen run`` flag of the same name."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import InputError
from loadgen.factories import DEFAULT_FIM_TEMPLATE
from loadgen.tasks import DEFAULT_IMAGE_MODEL, DEFAULT_VIDEO_MODEL
from sidecar.contracts.ports import HTTP_PORT, LLM_SERVER_PORT, OTLP_PORT

__all__ = ["MAX_BATCH", "MAX_REQUESTS", "RunConfig"]

DAY_S = 86_400.0
MAX_REQUESTS = 100_000  # requests of one run (all are built in memory before the first is sent)
MAX_BATCH = 8_192  # --batch-cap, and a sweep's levels (a level sends 4-8 requests per slot)
# (field, must be > 0, largest): the numbers a run is refused with (0 <= value <= largest otherwise)
_RANGES = (
    ("timeout_s", True, DAY_S),
    ("energy_wait_s", False, DAY_S),
    ("scrape_interval_s", True, 3600.0),
    ("min_window_s", False, DAY_S),
    ("scale", True, 1e6),
    ("prompt_scale", False, 1e6),
)
# (field, smallest, largest): whole numbers (None = unset), refused naming the flag outside
_WHOLE_RANGES = (
    ("requests", 1, MAX_REQUESTS),
    ("batch_cap", 1, MAX_BATCH),
    ("max_model_len", 1, 10_000_000),
    ("seed", 0, 2**63 - 1),
)


def _flag(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Settings of one run (units in the names: seconds ``_s``)."""

    mix: str = "study-llm"  # a preset or a mix YAML path
    server_url: str = f"http://127.0.0.1:{LLM_SERVER_PORT}"  # OpenAI-compatible LLM server
    diffusion_url: str = ""  # jouletrace diffusion server ('' = skip diffusion tasks)
    sidecar_url: str = f"http://127.0.0.1:{HTTP_PORT}"  # '' = no energy
    otlp_endpoint: str = f"127.0.0.1:{OTLP_PORT}"  # where client spans go ('' = not exported)
    model: str = ""  # '' = the first model the server lists
    diffusion_model: str = ""  # '' = send no model name (the server's own)
    requests: int | None = None  # total requests; default: the mix's, else 64
    arrivals: str = "all"
    phases: str = "auto"  # per-task, mixed, or auto (per-task for all-at-once)
    batch_cap: int | None = None  # B of the steady-state window; default: the concurrency, else 256
    min_window_s: float = 1.0  # a shorter steady-state window falls back to the full run
    scale: float = 1.0
    prompt_scale: float = 0.0  # prompt lengths' own scale; 0 = the same as scale
    max_model_len: int | None = None  # default: what the server reports
    seed: int = 0
    timeout_s: float = 600.0
    energy_wait_s: float = 15.0
    scrape_interval_s: float = 0.2
    enable_multimodal: bool = False
    ignore_eos: bool = True
    tokenize: bool = True
    gpu: str = ""  # the GPU, for the study's figures ('' = the sidecar's device names)
    fim_template: str = DEFAULT_FIM_TEMPLATE
    image_model: str = DEFAULT_IMAGE_MODEL
    video_model: str = DEFAULT_VIDEO_MODEL
    run_id: str = "lg"
    out_dir: str = ""  # '' = no files

    def __post_init__(self) -> None:
        """Numbers out of range are refused naming the flag (NaN, 0 s or inf s would be no timeout
        to aiohttp, a hang or a crash later)."""
        for name, lowest, largest in _WHOLE_RANGES:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= largest
            ):
                raise InputError(
                    f"--{_flag(name)}: must be a whole number >= {lowest} and <= {largest}, got {value!r}"
                )
        for name, above_zero, most in _RANGES:
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= most
            if not ok or (above_zero and value == 0):
                low = "> 0" if above_zero else ">= 0"
                raise InputError(f"--{_flag(name)}: must be a number {low} and <= {most:g}, got {value!r}")

    @property
    def out_path(self) -> Path | None:
        """The results folder, or ``None``."""
        return Path(self.out_dir) if self.out_dir else None

    def make_out_dir(self) -> Path | None:
        """Create the results folder before the run (one that cannot be made or written would lose
        the run's results at its end); errors name ``--out``."""
        path = self.out_path
        if path is None:
            return None
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"--out {path}: cannot create the folder ({err.strerror or err})") from err
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"--out {path}: cannot write into the folder")
        return path

    @property
    def prompt_factor(self) -> float:
        """The scale of prompt lengths (``prompt_scale``, or ``scale`` when it is 0)."""
        return self.prompt_scale or self.scale

    def to_json(self) -> dict[str, Any]:
        """For results.json."""
        return asdict(self)
