"""What crosses a process boundary: the formats and names jouletrace's processes agree on.

Stdlib only (``tests/sidecar/contracts/test_stdlib_only.py`` checks it), so the
vLLM plugin, the diffusion server and the load generator import these modules
without pulling in the sidecar (numpy, gRPC, attribution):

* :mod:`.vllm_wire`: the vLLM stat-logger plugin's UDP datagrams, rows as named tuples;
* :mod:`.scheduler_wire`: the vLLM scheduler hook's per-step datagrams (a stable public format);
* :mod:`.proxy_wire`: the OpenAI proxy process's per-request timings (UDP) and price sheet;
* :mod:`.span_attributes`: span attribute names shared by the diffusion server,
  the load generator and the sidecar's span taps;
* :mod:`.ports`: default ports (sidecar HTTP, OTLP receiver, plugin and hook UDP);
* :mod:`.errors`: the base exception every jouletrace CLI prints as one line.

This package re-exports nothing: import the module you need.
"""
