"""Time and energy of one engine step on a simulated H100-class GPU, with ground truth.

The scale is an 8B-parameter model in BF16 on an H100 (weights ~16 GB,
HBM ~3.3 TB/s, ~400 dense TFLOPS achieved). Defaults (:class:`GpuConfig`):

Time of a step with ``P`` prefill tokens, ``n`` decoding sequences whose KV
lengths sum to ``C``, and ``Q`` prefill query-key pairs (a chunk of ``k``
tokens ending at KV length ``L`` has ``k * (L - (k - 1) / 2)`` pairs)::

    tau0 = 6 ms + 40 us * P + 60 us * n + 40 ns * C + 1.3 ns * Q
    tau  = tau0 * LogNormal(0, 0.05)                       (jitter)

Energy, summed from parts that each have an owner (the ground truth, default
``static_split="floor"``)::

    floor    = idle_w * tau                                75 W * tau, shared equally
    fixed    = (static_w - idle_w) * t_fixed + step_fixed  155 W * 6 ms + 1.2 J, shared equally
    own time = (static_w - idle_w) * (the member's terms of tau0)   its own
    prefill  = 22 mJ * k + 0.4 uJ * pairs                  per prefill member, its own
    decode   = e_d(n) + 8 uJ * L                           per decode member, its own
    e_d(n)   = 18 mJ + 22 mJ / (1 + (n - 1) / 4)           40 mJ at n=1, 20.5 mJ at n=32
    noise    = LogNormal(0, 0.04)                          one factor per step, on all but the floor
    member_j = floor / n + noise * (fixed / n + own time + own part)
    energy_j = sum(member_j)

``e_d(n)`` is nonlinear in the batch: memory-bound decode gets cheaper per
token as the batch grows, then flattens. The attention terms (8 uJ per
decoded context token, 0.4 uJ per prefill pair) make long prompts cost more
than linearly. A 512-token prefill step draws ~650-700 W; a 32-sequence
decode step ~460 W; a single-sequence decode step ~430 W.

Who owns the static power (``static_split``):

- ``"floor"`` (default): what the GPU draws anyway (``idle_w``) is shared
  equally for the step's whole time; above that floor, the fixed time and
  energy of a step are shared and the time each member's tokens add is its
  own. This is the convention the fitted rule can identify from counters
  (see sidecar/attribution/fit.py); under the power cap the floor grows with
  the stretched time and the caused parts shrink, energy unchanged.
- ``"equal"``: ``static_w * tau`` is shared equally by the step's
  members, like the per-step fixed cost.
- ``"shapley"``: the Shapley value of the step's cost. Only the fixed time
  is joint: a member gets ``static_w * jitter * (t_fixed_s / n + its own
  time)``, its own time being its terms of ``tau0`` (e.g. 40 us per prefill
  token). A prefill chunk that makes a step 20 ms longer pays for that static
  power itself instead of charging the decodes that happened to share the step.
  Note: ``tau`` is (up to jitter) linear in the tokens, so static power x
  time (shared under ``equal``) and per-token cost (owned) are nearly
  collinear regressors; the two conventions differ exactly in who gets that
  part. A split rule that shares ``static_w * busy_s`` equally is scored
  against ``equal``; one that folds it into per-token costs, against ``shapley``.

Power cap (700 W): if ``energy_j / tau`` exceeds ``power_cap_w``, the clocks
drop and the step is stretched to ``tau = energy_j / power_cap_w``; the
energy (and so the ground truth) is unchanged: the same work at lower clocks.

Between steps the CPU schedules the next batch: a gap of Uniform(0.5, 3) ms,
plus with probability 1 % a hiccup of Uniform(5, 20) ms (GC, tokenizer).
Gaps and idle periods draw ``idle_w`` = 75 W and that energy belongs to no
request (idle truth). So the sum of every member's truth plus idle energy is
the total energy exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sidecar.attribution.events import Phase
from sidecar.errors import ConfigError
from sidecar.sim.scheduler import Member

__all__ = ["GpuConfig", "GpuModel", "StaticSplit", "StepCost"]

StaticSplit = Literal["floor", "equal", "shapley"]


@dataclass(frozen=True, slots=True)
class GpuConfig:
    """The model's parameters. Units: W, s, J (``_w``, ``_s``, ``_j``)."""

    idle_w: float = 75.0
    static_w: float = 230.0
    power_cap_w: float = 700.0
    step_fixed_j: float = 1.2
    t_fixed_s: float = 6e-3
    t_prefill_token_s: float = 40e-6
    t_decode_seq_s: float = 60e-6
    t_context_token_s: float = 40e-9
    t_prefill_pair_s: float = 1.3e-9
    time_jitter_sigma: float = 0.05
    e_prefill_token_j: float = 0.022
    e_prefill_pair_j: float = 0.4e-6
    e_decode_token_inf_j: float = 0.018
    e_decode_token_1_j: float = 0.040
    decode_half_batch: float = 4.0
    e_context_token_j: float = 8e-6
    energy_noise_sigma: float = 0.04
    gap_s: tuple[float, float] = (0.5e-3, 3e-3)
    hiccup_prob: float = 0.01
    hiccup_s: tuple[float, float] = (5e-3, 20e-3)
    # bigger prefill chunks use the GPU better: a chunk of knee tokens or more costs this fraction less
    # per token, a smaller one less in proportion (a term the fitted rule, linear in tokens, lacks)
    prefill_chunk_saving: float = 0.0
    prefill_chunk_knee_tokens: float = 2048.0
    static_split: StaticSplit = "floor"

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the knob that is invalid."""
        if self.static_split not in ("floor", "equal", "shapley"):
            raise ConfigError(
                f"gpu.static_split must be 'floor', 'equal' or 'shapley', got {self.static_split!r}"
            )
        for name in self.__dataclass_fields__:
            if name == "static_split":
                continue
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if any(not np.isfinite(v) or v < 0 for v in values):
                raise ConfigError(f"gpu.{name} must be finite and >= 0, got {value}")
        if not self.power_cap_w > 0:
            raise ConfigError(f"gpu.power_cap_w must be > 0, got {self.power_cap_w}")
        if not self.t_fixed_s > 0:
            raise ConfigError(f"gpu.t_fixed_s must be > 0, got {self.t_fixed_s}")
        if not self.decode_half_batch > 0:
            raise ConfigError(f"gpu.decode_half_batch must be > 0, got {self.decode_half_batch}")
        if not self.prefill_chunk_saving < 1 or not self.prefill_chunk_knee_tokens > 0:
            raise ConfigError("gpu.prefill_chunk_saving must be < 1 and gpu.prefill_chunk_knee_tokens > 0")
        if not self.hiccup_prob <= 1:
            raise ConfigError(f"gpu.hiccup_prob must be <= 1, got {self.hiccup_prob}")
        for name in ("gap_s", "hiccup_s"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"gpu.{name}: low {lo} > high {hi}")

    def prefill_tokens(self, k: int) -> float:
        """What a prefill chunk of ``k`` tokens costs in tokens of the per-token terms (time and energy):
        ``k`` unless ``prefill_chunk_saving`` is set, then ``k * (1 - saving * min(k, knee) / knee)``."""
        knee = self.prefill_chunk_knee_tokens
        return float(k) * (1.0 - self.prefill_chunk_saving * min(k, knee) / knee)

    def decode_token_j(self, n_decode: int) -> float:
        """Marginal energy of one decode token in a step with ``n_decode`` decoding sequences."""
        inf, one = self.e_decode_token_inf_j, self.e_decode_token_1_j
        return inf + (one - inf) / (1.0 + (max(n_decode, 1) - 1) / self.decode_half_batch)


@dataclass(frozen=True, slots=True)
class StepCost:
    """What one step cost. ``member_j[i]`` is the truth of ``members[i]``; they sum to ``energy_j``."""

    tau_s: float
    energy_j: float
    member_j: tuple[float, ...]
    capped: bool


class GpuModel:
    """Draws step times, energies and CPU gaps from one seeded generator."""

    def __init__(self, config: GpuConfig, rng: np.random.Generator) -> None:
        config.check()
        self.config = config
        self._rng = rng

    def step(self, members: Sequence[Member]) -> StepCost:
        """Run one step: its duration (s), energy (J) and each member's share (J)."""
        cfg = self.config
        n_decode = 0
        prefill_tokens = 0.0
        decode_context = 0
        pairs_total = 0.0
        own: list[float] = []
        for m in members:
            if m.phase is Phase.DECODE:
                n_decode += 1
                decode_context += m.context_tokens
        e_decode = cfg.decode_token_j(n_decode)  # the decodes' count first: it sets their cost
        own_time: list[float] = []
        for m in members:
            if m.phase is Phase.DECODE:
                own.append(e_decode * m.tokens + cfg.e_context_token_j * m.context_tokens)
                own_time.append(cfg.t_decode_seq_s * m.tokens + cfg.t_context_token_s * m.context_tokens)
            else:
                pairs = m.tokens * (m.context_tokens - (m.tokens - 1) / 2.0)
                k = cfg.prefill_tokens(m.tokens)
                prefill_tokens += k
                pairs_total += pairs
                own.append(cfg.e_prefill_token_j * k + cfg.e_prefill_pair_j * pairs)
                own_time.append(cfg.t_prefill_token_s * k + cfg.t_prefill_pair_s * pairs)
        tau0 = (
            cfg.t_fixed_s
            + cfg.t_prefill_token_s * prefill_tokens
            + cfg.t_decode_seq_s * n_decode
            + cfg.t_context_token_s * decode_context
            + cfg.t_prefill_pair_s * pairs_total
        )
        rng = self._rng
        jitter = float(np.exp(cfg.time_jitter_sigma * rng.standard_normal()))
        tau = tau0 * jitter
        noise = float(np.exp(cfg.energy_noise_sigma * rng.standard_normal()))
        n = max(len(members), 1)
        if cfg.static_split == "floor":
            return self._floor_split(members, own, own_time, tau, jitter, noise)
        if cfg.static_split == "equal":
            share = (cfg.static_w * tau + cfg.step_fixed_j) / n
            member_j = tuple(noise * (share + o) for o in own)
        else:  # shapley: the fixed time is joint, each member's own time is its own
            w = cfg.static_w * jitter
            share = (w * cfg.t_fixed_s + cfg.step_fixed_j) / n
            member_j = tuple(noise * (share + w * ot + o) for o, ot in zip(own, own_time, strict=True))
        energy_j = sum(member_j)
        capped = energy_j > cfg.power_cap_w * tau
        if capped:
            tau = energy_j / cfg.power_cap_w
        return StepCost(tau, energy_j, member_j, capped)

    def _floor_split(
        self,
        members: Sequence[Member],
        own: list[float],
        own_time: list[float],
        tau: float,
        jitter: float,
        noise: float,
    ) -> StepCost:
        """The default truth: the idle floor is shared, what the step adds above it is caused.

        ``idle_w * tau`` (what the GPU would draw anyway) is shared equally by the
        members; above the floor, the fixed time and fixed energy of a step are
        shared equally, and the time and energy each member's own tokens add are
        its own. Under the power cap the step stretches: the floor grows with the
        longer time and the dynamic parts shrink in proportion, energy unchanged.
        """
        cfg = self.config
        n = max(len(members), 1)
        above_w = (cfg.static_w - cfg.idle_w) * jitter
        shared = (above_w * cfg.t_fixed_s + cfg.step_fixed_j) / n
        dynamic = [noise * (shared + above_w * ot + o) for o, ot in zip(own, own_time, strict=True)]
        energy_j = cfg.idle_w * tau + sum(dynamic)
        capped = energy_j > cfg.power_cap_w * tau
        if capped:
            tau = energy_j / cfg.power_cap_w
            scale = (energy_j - cfg.idle_w * tau) / sum(dynamic)
            dynamic = [d * scale for d in dynamic]
        floor_share = cfg.idle_w * tau / n
        return StepCost(tau, energy_j, tuple(floor_share + d for d in dynamic), capped)

    def gap_s(self) -> float:
        """CPU time between two steps (s), drawn at ``idle_w``."""
        cfg = self.config
        rng = self._rng
        gap = float(rng.uniform(*cfg.gap_s))
        if cfg.hiccup_prob > 0 and rng.random() < cfg.hiccup_prob:
            gap += float(rng.uniform(*cfg.hiccup_s))
        return gap
