"""One vLLM process as the plugin's receiver hears it: its numbering, iteration clock and decodes.

:class:`~sidecar.taps.vllm_plugin.PluginReceiver` keeps one :class:`PluginSender` per pid
(:mod:`.senders`), so a second engine on the same port, or a datagram forged with another
pid, neither ends this process's requests in flight nor mixes its iterations into this
one's clock. Units: seconds (the receiver's monotonic clock), tokens.
"""

from __future__ import annotations

from collections import Counter

from sidecar.taps.sequence import SeqTracker
from sidecar.taps.vllm_plugin_batch import DecodingRequests

__all__ = ["PluginSender"]


class PluginSender:
    """A process's sequence numbers, last iteration end, iteration estimate and decoding requests."""

    __slots__ = ("decoding", "gapped", "heard_s", "last_end", "seqs", "step_s")

    def __init__(self, counts: Counter[str], heard_s: float) -> None:
        self.heard_s = heard_s  # when its latest datagram was sent
        self.seqs = SeqTracker(counts)
        self.last_end: float | None = None  # when its latest iteration ended
        self.step_s = 0.02  # running estimate of an iteration's duration
        self.decoding = DecodingRequests()
        self.gapped: set[str] = set()  # decoding when a datagram was lost: their work may be short

    def lost_datagram(self) -> None:
        """A gap in the numbering: every request decoding may have lost an iteration's work."""
        decoding = self.decoding
        self.gapped = {rid for rid in self.gapped if rid in decoding} | set(decoding.ids())
