"""What the running sidecar imports: nothing heavy it does not use (benchmarks/memory.py)."""

from __future__ import annotations

from tests.support import python_prints

# scipy.optimize alone cost ~50 MB RSS (the fit's NNLS is sidecar/attribution/nnls.py); the OTLP
# span exporter ~2 MB, imported only when otlp_forward_endpoint is set
_NOT_ON_THE_SIDECAR_PATH = ("scipy", "torch", "pandas", "opentelemetry.exporter.otlp")


def test_the_sidecar_wiring_imports_no_scipy_and_no_span_exporter() -> None:
    code = (
        "import sys, sidecar.wiring, sidecar.cli_sidecar\n"
        f"bad = sorted(n for n in sys.modules if n.startswith({_NOT_ON_THE_SIDECAR_PATH!r}))\n"
        "print(','.join(bad))\n"
    )
    assert python_prints(code) == ""


def test_without_an_otlp_port_the_sidecar_imports_no_grpc() -> None:
    """gRPC and the OTLP protos (~9 MB RSS) come with the OTLP receiver only (plugin- or hook-only pods)."""
    code = (
        "import sys\n"
        "from sidecar.config import SidecarConfig\n"
        "from sidecar.wiring import build_sidecar\n"
        "sidecar = build_sidecar(SidecarConfig(meter='sim', otlp_port=0, ledger_path=''))\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] == 'grpc')))\n"
    )
    assert python_prints(code) == ""
