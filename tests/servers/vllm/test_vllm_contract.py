"""Contract with the installed vLLM: the names our taps and plugin read must exist there.

Read from ``.venv-vllm`` (a subprocess: the sidecar never imports vLLM) and from
the live server's ``/metrics``, so an upgrade that renames a span attribute, a
metric, a stats field or the output-handler locals fails here, loudly.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

import pytest

from servers.vllm.launcher import vllm_python
from servers.vllm.stack import Stack
from sidecar.taps.vllm_metrics import METRIC_NAMES
from sidecar.taps.vllm_spans import SPAN_ATTRIBUTES, SPAN_NAME

pytestmark = pytest.mark.integration

PROBE = r"""
import dataclasses, inspect, json
from vllm.tracing.utils import SpanAttributes
from vllm.plugins import STAT_LOGGER_PLUGINS_GROUP
from vllm.v1.metrics import stats
from vllm.v1.engine import output_processor, async_llm, EngineCoreOutput, EngineCoreOutputs
from vllm.entrypoints.openai.chat_completion import serving as chat
it = stats.IterationStats()
print(json.dumps({
    "span_attributes": [v for k, v in vars(SpanAttributes).items() if k.isupper()],
    "group": STAT_LOGGER_PLUGINS_GROUP,
    "finished_fields": [f.name for f in dataclasses.fields(stats.FinishedRequestStats)],
    "iteration_attrs": sorted(vars(it)),
    "prompt_stats_fields": [f.name for f in dataclasses.fields(stats.PromptTokenStats)],
    "scheduler_fields": [f.name for f in dataclasses.fields(stats.SchedulerStats)],
    "request_stats_fields": [f.name for f in dataclasses.fields(stats.RequestStateStats)],
    "request_state_init": inspect.getsource(output_processor.RequestState.__init__),
    "output_processor_src": inspect.getsource(output_processor),
    "output_loop_src": inspect.getsource(async_llm.AsyncLLM._run_output_handler),
    "chat_src": inspect.getsource(chat),
    "core_outputs_fields": list(EngineCoreOutputs.__struct_fields__),
    "core_output_fields": list(EngineCoreOutput.__struct_fields__),
}))
"""


@pytest.fixture(scope="module")
def installed() -> dict[str, Any]:
    out = subprocess.run(
        [str(vllm_python()), "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_span_name_and_every_span_attribute_we_read_exist_in_vllm(installed: dict[str, Any]) -> None:
    assert set(SPAN_ATTRIBUTES.values()) <= set(installed["span_attributes"])
    assert f'span_name="{SPAN_NAME}"' in str(installed["output_processor_src"])


def test_the_stats_fields_the_plugin_reads_exist(installed: dict[str, Any]) -> None:
    assert installed["group"] == "vllm.stat_logger_plugins"
    finished = set(installed["finished_fields"])
    assert {"request_id", "finish_reason", "num_prompt_tokens", "num_generation_tokens", "queued_time",
            "prefill_time", "decode_time", "e2e_latency"} <= finished  # fmt: skip
    iteration = set(installed["iteration_attrs"])
    assert {"iteration_timestamp", "num_generation_tokens", "prompt_token_stats", "num_preempted_reqs",
            "finished_requests", "time_to_first_tokens_iter"} <= iteration  # fmt: skip
    assert {"computed", "cached_tokens"} <= set(installed["prompt_stats_fields"])
    assert {"num_running_reqs", "num_waiting_reqs", "kv_cache_usage"} <= set(installed["scheduler_fields"])
    assert {"first_token_ts", "scheduled_ts"} <= set(installed["request_stats_fields"])
    init = str(installed["request_state_init"])
    for attr in ("self.external_req_id", "self.prompt_len", "self.num_cached_tokens", "self.stats"):
        assert attr in init


def test_the_output_loop_has_the_locals_the_plugin_finds_it_by(installed: dict[str, Any]) -> None:
    src = str(installed["output_loop_src"])
    assert "output_processor = self.output_processor" in src
    assert "outputs = await engine_core.get_output_async()" in src and ".record(" in src
    # the plugin reads the step's requests from outputs.outputs[i].request_id (not every state)
    assert "outputs" in installed["core_outputs_fields"] and "request_id" in installed["core_output_fields"]


def test_vllm_prefixes_the_client_request_id_as_we_strip_it(installed: dict[str, Any]) -> None:
    assert 'f"chatcmpl-{self._base_request_id(raw_request' in str(installed["chat_src"])


def test_every_metric_the_scraper_reads_is_exposed_by_the_running_server(vllm_stack: Stack) -> None:
    with urllib.request.urlopen(f"{vllm_stack.vllm_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    assert set(METRIC_NAMES) <= exposed
