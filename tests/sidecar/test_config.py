"""One typed config: every knob has one name as flag, environment variable and field.

Precedence is flag > environment > default, and every bad value raises a
ConfigError that names the knob and where the value came from.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from sidecar.config import KNOBS, Knob, SidecarConfig, add_arguments, env_name, flag_name, load_config
from sidecar.errors import ConfigError

KNOB_NAMES = [k.name for k in KNOBS]


def parse_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


# ---- names and defaults -----------------------------------------------------------------


@pytest.mark.parametrize("knob", KNOBS, ids=KNOB_NAMES)
def test_every_knob_has_a_flag_an_env_var_and_a_field_with_the_same_default(knob: Knob) -> None:
    assert flag_name(knob.name) == "--" + knob.name.replace("_", "-")
    assert env_name(knob.name) == "JOULETRACE_" + knob.name.upper()
    field = {f.name: f for f in dataclasses.fields(SidecarConfig)}[knob.name]
    assert field.default == knob.default
    assert getattr(load_config({}, environ={}), knob.name) == knob.default
    flags = parse_flags()
    assert hasattr(flags, knob.name)  # argparse knows the flag under the knob's own name


def test_the_fields_are_exactly_the_knobs_in_the_same_order() -> None:
    assert [f.name for f in dataclasses.fields(SidecarConfig)] == KNOB_NAMES


def test_no_flags_and_no_environment_give_the_defaults() -> None:
    assert load_config(parse_flags(), environ={}) == SidecarConfig()


# ---- precedence ------------------------------------------------------------------------------


def test_a_flag_beats_the_environment_which_beats_the_default() -> None:
    env = {"JOULETRACE_PORT": "1234", "JOULETRACE_SPLIT": "tokens"}
    config = load_config(parse_flags("--port", "4321"), environ=env)
    assert config.port == 4321  # flag over env
    assert config.split == "tokens"  # env over default
    assert config.poll_interval_s == 0.02  # default


@pytest.mark.parametrize(
    ("knob", "text", "value"),
    [
        ("poll_interval_s", "0.05", 0.05),
        ("fit_window_ticks", "100", 100),
        ("sim_seed", "3", 3),
        ("ledger_path", "", ""),  # an empty ledger path means "keep none", and is kept
        ("devices", "0,GPU-abc", "0,GPU-abc"),
    ],
)
def test_each_knob_is_read_and_cast_from_both_its_flag_and_its_env_var(
    knob: str, text: str, value: object
) -> None:
    from_flag = load_config(parse_flags(flag_name(knob), text), environ={})
    from_env = load_config(parse_flags(), environ={env_name(knob): text})
    assert getattr(from_flag, knob) == value
    assert getattr(from_env, knob) == value


def test_a_mapping_of_knobs_works_like_parsed_flags() -> None:
    config = load_config({"meter": "sim", "port": "0", "settle_s": None}, environ={})
    assert (config.meter, config.port, config.settle_s) == ("sim", 0, 2.0)


def test_an_unknown_knob_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="poll_interval"):
        load_config({"poll_interval": "1"}, environ={})


# ---- bad values ------------------------------------------------------------------------------------

BAD_VALUES = [
    ("port", "http"),
    ("port", "70000"),
    ("port", "-1"),
    ("poll_interval_s", "0"),
    ("poll_interval_s", "-0.02"),
    ("poll_interval_s", "fast"),
    ("status_interval_s", "0"),
    ("tick_interval_s", "-1"),
    ("settle_s", "-0.5"),
    ("fit_window_ticks", "0"),
    ("fit_window_ticks", "1.5"),
    ("fit_warmup_ticks", "-10"),
    ("timeline_capacity", "0"),
    # values past what the parts they size can take (each was accepted, then failed with a traceback)
    ("timeline_capacity", "2"),  # readiness needs three counter updates kept: /readyz 503 for ever
    ("timeline_capacity", "1000000000000"),  # allocated up front
    ("otlp_max_message_bytes", "1073741824"),  # gRPC takes twice the limit as a C int
    ("otlp_retry_delay_s", "1e19"),  # a protobuf Duration's seconds are an int64
    ("shutdown_grace_s", "1e10"),  # past threading.TIMEOUT_MAX: the stop's watchdog died
    ("request_timeout_s", "1e300"),
    ("tick_interval_s", "1e-9"),  # a loop's period under 1 ms: taken, and the idle sidecar spun a core
    ("poll_interval_s", "0.0001"),
    ("sim_seed", "-1"),  # numpy's seed: a traceback at start
    ("otlp_forward_endpoint", ":::"),  # was accepted; only the exporter's warnings said so, later
    ("otlp_forward_endpoint", "127.0.0.1:99999"),
    ("otlp_forward_endpoint", "collector"),
    ("otlp_forward_endpoint", "::1:4317"),
    ("vllm_metrics_url", "notaurl"),  # was accepted; every scrape then counted as a malformed page
    ("vllm_metrics_url", "localhost:8000/metrics"),
    ("vllm_metrics_url", "http://localhost:99999/metrics"),
    ("ledger_max_rows", "many"),
    ("ledger_max_age_s", "0"),
    ("replay_speed", "0"),
    ("cpu_idle_w", "-1"),
    ("cpu_max_w", "0"),
    ("sim_requests", "0"),
    ("sim_seed", "x"),
    ("otlp_memory_limit_percent", "101"),
    ("otlp_memory_limit_percent", "-1"),
    ("otlp_memory_limit_percent", "most"),
]


@pytest.mark.parametrize(("knob", "text"), BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_a_bad_flag_value_raises_config_error_naming_the_knob_and_the_flag(knob: str, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(parse_flags(f"{flag_name(knob)}={text}"), environ={})
    message = str(err.value)
    assert message.startswith(f"{knob}:")
    assert flag_name(knob) in message
    assert repr(text) in message


@pytest.mark.parametrize(("knob", "text"), BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_a_bad_env_value_raises_config_error_naming_the_knob_and_the_env_var(knob: str, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(parse_flags(), environ={env_name(knob): text})
    message = str(err.value)
    assert message.startswith(f"{knob}:")
    assert env_name(knob) in message


def test_a_good_flag_hides_a_bad_env_value() -> None:
    """The environment is only read for knobs no flag set."""
    config = load_config(parse_flags("--port", "8080"), environ={"JOULETRACE_PORT": "http"})
    assert config.port == 8080


NON_FINITE = [
    ("poll_interval_s", "nan"),
    ("tick_interval_s", "inf"),
    ("settle_s", "inf"),
    ("cpu_max_w", "nan"),
    ("ledger_max_age_s", "nan"),
    ("otlp_memory_limit_percent", "nan"),
]


@pytest.mark.parametrize(("knob", "text"), NON_FINITE, ids=[f"{k}={v}" for k, v in NON_FINITE])
def test_a_non_finite_number_is_a_bad_value(knob: str, text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{knob}:"):
        load_config({knob: text}, environ={})


# ---- choices --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "text"),
    [("meter", "bogus"), ("meter", "NVML"), ("split", "shapley"), ("log_level", "verbose")],
)
def test_a_knob_with_choices_accepts_only_those_and_lists_them(knob: str, text: str) -> None:
    spec = next(k for k in KNOBS if k.name == knob)
    assert spec.choices is not None
    with pytest.raises(ConfigError) as err:
        load_config({knob: text}, environ={})
    message = str(err.value)
    assert message.startswith(f"{knob}:")
    assert flag_name(knob) in message
    assert all(choice in message for choice in spec.choices)


@pytest.mark.parametrize("knob", [k.name for k in KNOBS if k.choices])
def test_every_listed_choice_is_accepted(knob: str) -> None:
    spec = next(k for k in KNOBS if k.name == knob)
    assert spec.choices is not None
    for choice in spec.choices:
        extra = {"replay_path": "trace.csv"} if choice == "replay" else {}
        assert getattr(load_config({knob: choice, **extra}, environ={}), knob) == choice


def test_a_choice_from_the_environment_names_the_env_var() -> None:
    with pytest.raises(ConfigError, match="JOULETRACE_SPLIT"):
        load_config({}, environ={"JOULETRACE_SPLIT": "shapley"})


# ---- rules across knobs ------------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"JOULETRACE_REPLAY_PATH": ""}])
def test_the_replay_meter_without_a_replay_path_is_an_error_naming_replay_path(
    environ: dict[str, str],
) -> None:
    with pytest.raises(ConfigError, match=r"^replay_path:"):
        load_config({"meter": "replay"}, environ=environ)


def test_the_replay_meter_takes_its_path_from_the_environment_too() -> None:
    config = load_config({"meter": "replay"}, environ={"JOULETRACE_REPLAY_PATH": "trace.csv"})
    assert config.replay_path == "trace.csv"


def test_cpu_max_below_cpu_idle_is_an_error_naming_both() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"cpu_idle_w": "50", "cpu_max_w": "40"}, environ={})
    assert "cpu_max_w" in str(err.value) and "cpu_idle_w" in str(err.value)


def test_cpu_max_equal_to_cpu_idle_is_allowed() -> None:
    config = load_config({"cpu_idle_w": "40", "cpu_max_w": "40"}, environ={})
    assert config.cpu_idle_w == config.cpu_max_w == 40.0


# ---- devices ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        ("all", None),
        ("ALL", None),
        (" all ", None),
        ("", None),
        ("0", ["0"]),
        ("0,1", ["0", "1"]),
        (" 1 , 0 ", ["1", "0"]),
        ("GPU-aaaa,,GPU-bbbb,", ["GPU-aaaa", "GPU-bbbb"]),
    ],
)
def test_device_list_is_none_for_all_devices_else_the_ids_in_order(
    devices: str, expected: list[str] | None
) -> None:
    assert SidecarConfig(devices=devices).device_list() == expected


def test_a_knobs_default_is_read_by_name_and_an_unknown_name_is_an_error() -> None:
    from sidecar import knobs
    from sidecar.taps.vllm_spans import TASK_WAIT_S

    assert knobs.default("vllm_task_wait_s") == TASK_WAIT_S == SidecarConfig().vllm_task_wait_s
    with pytest.raises(KeyError, match="no knob called 'vllm_task_wait'"):
        knobs.default("vllm_task_wait")


def test_a_vllm_metrics_url_is_an_http_url_or_empty() -> None:
    for url in ("", "http://localhost:8000/metrics", "https://[::1]:8443/metrics", "http://vllm/metrics"):
        assert load_config(parse_flags(f"--vllm-metrics-url={url}"), environ={}).vllm_metrics_url == url


def test_a_forward_endpoint_is_host_and_port_with_a_scheme_or_an_ipv6_host_in_brackets() -> None:
    for text in ("", "collector:4317", "grpc://collector:4317", "http://10.0.0.1:4317", "[::1]:4317"):
        assert (
            load_config(parse_flags(f"--otlp-forward-endpoint={text}"), environ={}).otlp_forward_endpoint
            == text
        )
