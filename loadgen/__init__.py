"""The load generator: the study's seven tasks against OpenAI-compatible servers, energy from the sidecar.

One concept per module, in the order a run uses them:

    tasks.py, lengths.py      the seven tasks (data/tasks.yaml) and their fitted length distributions
    mixes.py, datasets.py     task weights (YAML presets in data/mixes/) and users' JSONL rows
    prompts.py, media.py      synthetic prompt text of a token length; generated JPEG / MJPEG clip
    factories.py, records.py  request bodies per task; Request and Result
    arrivals.py               all-at-once, Poisson, constant, gamma, closed loop, trace replay
    client.py, tracing.py     streaming HTTP client, pre-flight, tokenizer calibration; OTel client spans
    sidecar_client.py         the sidecar's energy counter over time and per-request records
    runner.py, config.py      one run end to end; its settings
    analysis.py               steady-state window, J/token two ways, per-task energy
    report.py, plots.py       results.json, requests.csv, terminal table; PNGs
    compare.py                the regression gate
    sweep.py, cpu_demo.py     concurrency / batch-cap sweeps; the CPU demo stack
    cli.py                    ``jouletrace loadgen run|compare|sweep|demo``

See docs/loadgen.md.
"""
