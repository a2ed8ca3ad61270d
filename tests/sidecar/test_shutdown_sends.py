"""A stop closes the taps that send downstream last: after every record is sealed and stored, with
what is left of the grace period (a hung collector must not cost the stop its records)."""

from __future__ import annotations

from pathlib import Path

from sidecar.attribution.events import Phase, WorkEvent
from sidecar.taps.tap import Sends
from tests.sidecar.test_app_faults import poll_for
from tests.sidecar.test_app_lifecycle import ScriptedTap, _sidecar
from tests.support import FakeClock


class SendingTap(ScriptedTap):
    """A scripted tap that also sends downstream: notes what was stored when its output closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[tuple[float, object]] = []  # (grace given, provisional state then)
        self.ledger_state: object = None

    def close_output(self, grace_s: float) -> None:
        self.closed.append((grace_s, self.ledger_state))


def test_the_stop_closes_a_sending_tap_after_storing_the_open_requests(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    tap = SendingTap()
    assert isinstance(tap, Sends)
    sidecar = _sidecar(clock, tmp_path / "ledger.db", tap)
    real_close = tap.close_output

    def close_output(grace_s: float) -> None:
        tap.ledger_state = sidecar.ledger.load_state("provisional")
        real_close(grace_s)

    tap.close_output = close_output  # type: ignore[method-assign]
    try:
        poll_for(sidecar, clock, 1.0)
        tap.events = [WorkEvent("open", 100.2, 102.0, Phase.DECODE, 8)]
        poll_for(sidecar, clock, 0.2)
        sidecar.shutdown()
        assert tap.stopped and len(tap.closed) == 1
        grace_s, stored = tap.closed[0]
        assert 0.0 < grace_s <= sidecar.config.shutdown_grace_s
        assert isinstance(stored, dict) and [r["request_id"] for r in stored["records"]] == ["open"]
    finally:
        sidecar.close()
