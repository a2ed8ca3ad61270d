"""The OpenAI proxy: energy in every response, per tenant, in front of any engine.

``jouletrace proxy --upstream URL`` runs an OpenAI-compatible reverse proxy in a
process of its own, in front of any engine (vLLM, SGLang, TGI, llama.cpp,
``transformers serve``), and tells the sidecar each completion's timing, so no
spans are needed; ``jouletrace sidecar --proxy-upstream URL`` runs the same proxy
on a thread of the sidecar. One concept per module:

* the proxy's hot path, either way: :mod:`.serve` (server, upstream session),
  :mod:`.forward` (the app that forwards every request), :mod:`.upstream` (the shared
  context, the upstream call, headers, error answers), :mod:`.completion` (a
  completion learned from and answered with its energy), :mod:`.sse` (events framed
  as they arrive), :mod:`.relay` (each event learned from, usage stripped or energy
  added), :mod:`.learn` (what a request says, validated; its trace), :mod:`.energy`
  (the provisional energy priced from a price sheet);
* its own process: :mod:`.process`, :mod:`.sender` (rows to the sidecar, UDP),
  :mod:`.price_client` (the sidecar's prices, HTTP), :mod:`.cli` (``jouletrace proxy``);
* the sidecar's side: :mod:`.book` (live traces -> work), :mod:`.work` (work events
  and request infos from a trace's timing), :mod:`.prices` (the price sheet from the
  live fit), :mod:`.tap` (the in-process proxy as a :class:`~sidecar.taps.tap.Tap`),
  :mod:`.wire` (that tap from the sidecar's config). The receiver of the proxy
  process's rows is :mod:`sidecar.taps.proxy_wire`.
"""
