"""Finished requests' histograms and per-tenant counters, recorded a batch of records at a time.

Per finished request: its energy (J), J per output token, J per image, video, frame
or video second, and per tenant its energy and output tokens. A batch of records
is read as its rows of values (:class:`~sidecar.attribution.record_batch.RecordBatch`)
and added to the :mod:`.aggregates` streams at once, with the counts and sums the
OTel SDK would give recording each value (``tests/sidecar/export/test_aggregates.py``
holds the two to the same ``/metrics`` text). Energies in joules.

The model, operation and task of a record can come from a client (a diffusion span, a
proxied request body): the series keep at most ``max_models`` model names (the configured
``model`` reserved, then the first seen, as the energy totals do; each keeps its own set),
:data:`MAX_TASKS` task and :data:`MAX_OPERATIONS` operation names, the first seen; any other
reads ``other`` (counted: :attr:`RecordHistograms.labels_folded`). Unfolded, such names filled
every stream's 2,000 attribute sets (``benchmarks/hostile_cost.py``, "metrics names"). Each name
capped on its own still left their combinations: 64 models by 64 tasks by 16 operations. So each
histogram also keeps at most :data:`MAX_LABEL_SETS` label sets, the first seen (:class:`LabelSets`);
a later new one reads ``other`` for model, operation and task (its energy source and unit kept),
counted alike. A label set is 29 samples (request energy, J per unit: 27 buckets, count, sum) or 19
(J per token), so the three hold at most 128 * 77 = 9,856 samples besides the folded sets (one per
energy source, and unit): an estimated ~2.4 MB of ``/metrics`` at ~245 B a sample (names of ~10
characters), rendered on the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sidecar.attribution.record_batch import (
    ATTRIBUTES,
    ENERGY_J,
    ENERGY_SOURCE,
    FINAL,
    MODEL,
    OPERATION,
    OUTPUT_TOKENS,
    OUTPUT_UNITS,
    TASK,
    UNIT,
    RecordBatch,
    Values,
)
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.totals import MAX_MODELS, OTHER, Names
from sidecar.contracts.span_attributes import TENANT
from sidecar.export import instruments
from sidecar.export.aggregates import Key, Stream, Streams
from sidecar.export.tenants import TenantLabels

__all__ = [
    "ENERGY_PER_TOKEN_BUCKETS_J",
    "MAX_LABEL_SETS",
    "MAX_OPERATIONS",
    "MAX_TASKS",
    "REQUEST_ENERGY_BUCKETS_J",
    "LabelSets",
    "RecordHistograms",
]

MAX_TASKS = 64  # task names the per-request series keep (the study has 7); more: "other"
MAX_OPERATIONS = 16  # operation names (chat, text_completion, image_generation, ...); more: "other"
# label sets each per-request histogram keeps: twice max_model_labels (64), each model room for a
# second task or operation; more: model, operation and task "other"
MAX_LABEL_SETS = 128
_OPERATIONS = ("chat", "text_completion", "image_generation", "video_generation")


def _one_two_five(low: float, high: float) -> tuple[float, ...]:
    """1-2-5 log-spaced bucket boundaries from ``low`` to ``high`` inclusive."""
    out: list[float] = []
    decade = low
    while decade <= high * (1 + 1e-9):
        for mantissa in (1.0, 2.0, 5.0):
            value = float(f"{decade * mantissa:.6g}")
            if value <= high * (1 + 1e-9):
                out.append(value)
        decade *= 10
    return tuple(out)


# 10 mJ (a tiny CPU request) to 2 MJ (above the study's largest video request, ~1.16 MJ).
REQUEST_ENERGY_BUCKETS_J: tuple[float, ...] = _one_two_five(0.01, 2e6)
# 0.1 mJ to 10 J per output token.
ENERGY_PER_TOKEN_BUCKETS_J: tuple[float, ...] = _one_two_five(1e-4, 10.0)

# the attributes of each per-request series, in the order their values are given
_REQUEST_KEYS = ("gen_ai.request.model", "gen_ai.operation.name", "jouletrace.task", "energy.source")
_PER_TOKEN_KEYS = ("gen_ai.request.model", "jouletrace.task", "energy.source")
_PER_UNIT_KEYS = (*_PER_TOKEN_KEYS, "jouletrace.unit")
_TENANT_ENERGY_KEYS = ("gen_ai.request.model", "jouletrace.tenant", "energy.source")
_TENANT_TOKEN_KEYS = ("gen_ai.request.model", "jouletrace.tenant")
Batch = dict[Stream, dict[Key, list[float]]]


def _add(batch: Batch, stream: Stream, key: Key, value: float) -> None:
    """One value for ``stream``'s series ``key`` (streams and series kept in first-use order)."""
    groups = batch.get(stream)
    if groups is None:
        groups = batch[stream] = {}
    values = groups.get(key)
    if values is None:
        groups[key] = [value]
    else:
        values.append(value)


def _float(text: str | None) -> float:
    """A record attribute as a finite number, 0.0 if absent or not a number."""
    try:
        value = float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


class LabelSets:
    """The label sets of one histogram, bounded: the first ``most`` distinct keys keep theirs, any
    later new one reads :data:`OTHER` for its first ``named`` values, the names a client gives (each
    such use counted in ``folded``). The folded keys (one per energy source, and unit) are kept
    beyond ``most``."""

    __slots__ = ("_known", "_named", "folded", "most")

    def __init__(self, most: int, named: int) -> None:
        self.most, self.folded, self._named = most, 0, named
        self._known: set[Key] = set()

    def __call__(self, key: Key) -> Key:
        if key in self._known:
            return key
        if len(self._known) < self.most:
            self._known.add(key)
            return key
        folded = (OTHER,) * self._named + key[self._named :]
        if folded != key:  # a key whose names all read "other" already is the folded one
            self.folded += 1
        return folded


class RecordHistograms:
    """The per-request histograms and tenant counters, as batched streams of one scope."""

    def __init__(
        self, streams: Streams, tenant_top_n: int = 10, *, max_models: int = MAX_MODELS, model: str = ""
    ) -> None:
        self._tenants = TenantLabels(tenant_top_n)
        self._model = Names(max_models, (model,))
        self._task = Names(MAX_TASKS)
        self._operation = Names(MAX_OPERATIONS, _OPERATIONS)
        # per histogram; its keys' client-named values: model, operation, task / model, task
        self._request_sets = LabelSets(MAX_LABEL_SETS, 3)
        self._token_sets, self._unit_sets = LabelSets(MAX_LABEL_SETS, 2), LabelSets(MAX_LABEL_SETS, 2)
        self._create_histograms(streams)
        self._create_tenant_counters(streams)
        self._streams = streams

    @property
    def labels_folded(self) -> int:
        """Names recorded as ``other`` (model, task, operation: up to three a record; the sets were full),
        and histogram values recorded under a folded label set (:class:`LabelSets`: up to four a record)."""
        names = self._model.folded + self._task.folded + self._operation.folded
        return names + self._request_sets.folded + self._token_sets.folded + self._unit_sets.folded

    def _create_histograms(self, streams: Streams) -> None:
        """Per finished request: its energy, J per output token, J per diffusion output unit."""
        self.request_energy = streams.stream(
            instruments.REQUEST_ENERGY,
            "J",
            "Energy attributed to each finished request, in joules (J).",
            _REQUEST_KEYS,
            REQUEST_ENERGY_BUCKETS_J,
        )
        self.per_token = streams.stream(
            instruments.ENERGY_PER_OUTPUT_TOKEN,
            "J",
            "joules per output token: a finished LLM request's energy (J) / its output tokens.",
            _PER_TOKEN_KEYS,
            ENERGY_PER_TOKEN_BUCKETS_J,
        )
        self.per_unit = streams.stream(
            instruments.ENERGY_PER_OUTPUT_UNIT,
            "J",
            "joules per image, video, frame or video second (jouletrace.unit) of a finished "
            "diffusion request: its energy (J) / its output in that unit.",
            _PER_UNIT_KEYS,
            REQUEST_ENERGY_BUCKETS_J,
        )

    def _create_tenant_counters(self, streams: Streams) -> None:
        """Energy and output tokens of finished requests, per tenant."""
        self.tenant_energy = streams.stream(
            instruments.TENANT_ENERGY,
            "J",
            "Energy of finished requests per tenant (top-N by energy, then other), in joules.",
            _TENANT_ENERGY_KEYS,
        )
        self.tenant_tokens = streams.stream(
            instruments.TENANT_OUTPUT_TOKENS,
            "{token}",
            "Output tokens of finished requests per tenant (same tenant labels as the energy).",
            _TENANT_TOKEN_KEYS,
        )

    def record(self, records: Iterable[RequestEnergy]) -> int:
        """Record final requests in the histograms; returns how many were recorded.

        Records with ``final=False`` are skipped (they are still growing), as are
        non-finite or negative energies and records whose energy is unknown (attribute
        ``energy_unknown``: their work was lost; the attributor counts them). Record each
        final request once.
        J/token is recorded only for ``unit == "token"`` with output tokens > 0 (a tenant's energy
        and tokens for every token record: a prompt aborted before its first token used energy); J/image,
        J/video, J/frame and J/video-second (``video_frames``/``video_fps`` attributes) for
        ``unit`` image or video with output units > 0. The whole batch is added at once
        (:mod:`.aggregates`), with the counts and sums recording each value would give; a
        :class:`~sidecar.attribution.record_batch.RecordBatch` is read as its rows of values.
        """
        batch: Batch = {}
        recorded = 0
        named: dict[Key, tuple[str, str, Key]] = {}  # this batch's names, as _keys gave them
        token_keys: dict[Key, Key] = {}
        for rec in RecordBatch.of(records).values:
            energy_j = rec[ENERGY_J]
            if not rec[FINAL] or not math.isfinite(energy_j) or energy_j < 0:
                continue
            attributes = rec[ATTRIBUTES]
            if attributes.get("energy_unknown") == "true":
                continue
            source, unit = rec[ENERGY_SOURCE], rec[UNIT]
            model, task, request_key = self._keys((rec[MODEL], rec[OPERATION], rec[TASK], source), named)
            _add(batch, self.request_energy, request_key, energy_j)
            output_tokens = rec[OUTPUT_TOKENS]
            if unit == "token":  # every request's energy to its tenant, one with no output too
                if output_tokens > 0:
                    token_key = self._token_key((model, task, source), token_keys)
                    _add(batch, self.per_token, token_key, energy_j / output_tokens)
                tenant = self._tenants.label(attributes.get(TENANT), energy_j)
                if self._tenants.retired:
                    self._retire_tenants(batch)
                _add(batch, self.tenant_energy, (model, tenant, source), energy_j)
                _add(batch, self.tenant_tokens, (model, tenant), output_tokens)
            elif unit in ("image", "video") and rec[OUTPUT_UNITS] > 0:
                self._record_per_unit(batch, rec, (model, task, source))
            recorded += 1
        self._streams.add(batch)
        return recorded

    def _keys(self, names: Key, known: dict[Key, tuple[str, str, Key]]) -> tuple[str, str, Key]:
        """A record's model and task as the name sets give them, and its request histogram's key, of
        its (model, operation, task, energy source). Kept in ``known`` where nothing was folded: the
        sets then give the same again and count nothing (they never forget a name), so a batch asks
        them once for each set of names."""
        found = known.get(names)
        if found is None:
            folded = self.labels_folded
            model, task = self._model(names[0]), self._task(names[2])
            found = (model, task, self._request_sets((model, self._operation(names[1]), task, names[3])))
            if self.labels_folded == folded:
                known[names] = found
        return found

    def _token_key(self, key: Key, known: dict[Key, Key]) -> Key:
        """The J-per-token histogram's key for ``key`` (model, task, source); kept as :meth:`_keys` keeps."""
        found = known.get(key)
        if found is None:
            folded = self._token_sets.folded
            found = self._token_sets(key)
            if self._token_sets.folded == folded:
                known[key] = found
        return found

    def _retire_tenants(self, batch: Batch) -> None:
        """End the series of the tenants put out of a named slot (:class:`TenantLabels`), in every model
        and energy source, as for a pod that goes away; from now on their energy is ``other``, and so
        are their values still in ``batch``. What they used since the last scrape is not exported."""
        gone = set(self._tenants.drain_retired())

        def doomed(key: Key) -> bool:  # (model, tenant, ...); the overflow set's key is shorter
            return len(key) > 1 and key[1] in gone

        for stream in (self.tenant_energy, self.tenant_tokens):
            groups = batch.get(stream, {})
            for key in [k for k in groups if doomed(k)]:
                groups.setdefault((key[0], OTHER, *key[2:]), []).extend(groups.pop(key))
            self._streams.drop(stream, doomed)

    def _record_per_unit(self, batch: Batch, rec: Values, key: Key) -> None:
        """J per image or video; for videos also J per frame and J per second of video.

        A value that overflows (a hostile tiny output or frame count) is left out, as the SDK's
        ``Histogram.record`` leaves out a non-finite one."""
        unit, output_units, attributes = rec[UNIT], rec[OUTPUT_UNITS], rec[ATTRIBUTES]
        per_unit = [(unit, output_units)]
        frames = _float(attributes.get("video_frames")) if unit == "video" else 0.0
        if frames > 0:
            all_frames = frames * output_units
            per_unit.append(("frame", all_frames))
            fps = _float(attributes.get("video_fps"))
            if fps > 0:
                per_unit.append(("video_second", all_frames / fps))
        for name, amount in per_unit:  # an amount that overflowed (frames / a tiny fps) is no amount
            value = rec[ENERGY_J] / amount if 0 < amount < math.inf else math.inf
            if math.isfinite(value):
                _add(batch, self.per_unit, self._unit_sets((*key, name)), value)
