"""Contract with the installed vLLM: what the scheduler hook reads and overrides exists as expected.

Probed in ``.venv-vllm`` (a subprocess: the sidecar never imports vLLM), with
this checkout first on the path as the launcher sets it. An upgrade that
renames a ``SchedulerOutput`` field, changes a method the hook wraps, or the
way vLLM derives its internal request ids fails here, loudly.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from servers.vllm.launcher import REPO, SCHEDULER_HOOK, vllm_python

pytestmark = pytest.mark.integration

PROBE = r"""
import dataclasses, inspect, json, sys, types
from vllm import envs
from vllm.config.scheduler import SchedulerConfig
from vllm.utils import random_uuid
from vllm.v1.core.sched import output
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine.input_processor import InputProcessor
from vllm.v1.request import Request, RequestStatus
from servers.vllm import scheduler_hook as hook

def params(f):
    return list(inspect.signature(f).parameters)

cfg = types.SimpleNamespace(scheduler_config=types.SimpleNamespace(async_scheduling=True))
picked_async = type(hook.JouletraceScheduler.__new__(hook.JouletraceScheduler, vllm_config=cfg)).__name__
cfg.scheduler_config.async_scheduling = False
picked_sync = type(hook.JouletraceScheduler.__new__(hook.JouletraceScheduler, vllm_config=cfg)).__name__
resolved = SchedulerConfig.default_factory(scheduler_cls=sys.argv[1]).get_scheduler_cls()
print(json.dumps({
    "schedule": params(Scheduler.schedule),
    "update_from_output": params(Scheduler.update_from_output),
    "init": params(Scheduler.__init__),
    "output_fields": [f.name for f in dataclasses.fields(output.SchedulerOutput)],
    "new_fields": [f.name for f in dataclasses.fields(output.NewRequestData)],
    "cached_fields": [f.name for f in dataclasses.fields(output.CachedRequestData)],
    "request_init": inspect.getsource(Request.__init__),
    "request_props": [
        n for n in ("num_output_tokens", "get_finished_reason", "is_finished") if hasattr(Request, n)
    ],
    "aborted": RequestStatus.FINISHED_ABORTED.name,
    "async_is_scheduler": issubclass(AsyncScheduler, Scheduler),
    "finished_src": inspect.getsource(Scheduler._update_after_schedule)
    + inspect.getsource(Scheduler._free_request),
    "assign_id_src": inspect.getsource(InputProcessor.assign_request_id),
    "uuid8": f"{random_uuid():.8}",
    "randomization_env": isinstance(envs.VLLM_DISABLE_REQUEST_ID_RANDOMIZATION, bool),
    "mro": [c.__name__ for c in hook.JouletraceAsyncScheduler.__mro__[:4]],
    "picked": [picked_async, picked_sync],
    "resolved": resolved.__module__ + "." + resolved.__qualname__,
}))
"""


@pytest.fixture(scope="module")
def installed() -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [str(vllm_python()), "-c", PROBE, SCHEDULER_HOOK],
        capture_output=True, text=True, timeout=180, check=True, env=env, cwd="/",
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_methods_the_hook_wraps_have_the_signatures_it_forwards(installed: dict[str, Any]) -> None:
    assert installed["schedule"] == ["self", "throttle_prefills"]
    assert installed["update_from_output"] == ["self", "scheduler_output", "model_runner_output"]
    assert installed["init"][:2] == ["self", "vllm_config"]


def test_the_scheduler_output_fields_the_hook_reads_exist(installed: dict[str, Any]) -> None:
    assert {"scheduled_new_reqs", "scheduled_cached_reqs", "num_scheduled_tokens"} <= set(
        installed["output_fields"]
    )
    assert {"req_id", "num_computed_tokens"} <= set(installed["new_fields"])
    assert {"req_ids", "num_computed_tokens"} <= set(installed["cached_fields"])


def test_the_request_fields_the_hook_reads_exist(installed: dict[str, Any]) -> None:
    src = installed["request_init"]
    assert "self.num_prompt_tokens" in src and "self.arrival_time" in src and "self.status" in src
    assert installed["request_props"] == ["num_output_tokens", "get_finished_reason", "is_finished"]
    assert installed["aborted"] == "FINISHED_ABORTED"


def test_finished_ids_are_collected_by_free_and_cleared_by_schedule(installed: dict[str, Any]) -> None:
    src = installed["finished_src"]
    assert "self.finished_req_ids.add(request_id)" in src and "self.finished_req_ids = set()" in src


def test_vllm_appends_eight_hex_characters_to_the_front_ends_request_id(installed: dict[str, Any]) -> None:
    assert (
        'request.request_id = f"{request.external_req_id}-{random_uuid():.8}"' in installed["assign_id_src"]
    )
    assert len(installed["uuid8"]) == 8 and int(installed["uuid8"], 16) >= 0
    assert installed["randomization_env"]


def test_the_flag_resolves_to_the_hook_which_follows_vllms_async_choice(installed: dict[str, Any]) -> None:
    assert installed["resolved"] == SCHEDULER_HOOK
    assert installed["async_is_scheduler"]
    assert installed["picked"] == ["JouletraceAsyncScheduler", "JouletraceScheduler"]
    assert installed["mro"] == [
        "JouletraceAsyncScheduler",
        "JouletraceScheduler",
        "AsyncScheduler",
        "Scheduler",
    ]
