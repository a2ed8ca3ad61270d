"""The OpenAI proxy tap: energy in every response, per tenant, in front of any engine.

``jouletrace proxy --upstream URL`` (or the sidecar with ``proxy_upstream`` set)
puts an OpenAI-compatible reverse proxy in front of any engine (vLLM, SGLang,
TGI, llama.cpp, ``transformers serve``) and learns each completion's work from
its chunk timing, so no spans are needed. One concept per module:

* :mod:`.sse`: server-sent events framed as they arrive;
* :mod:`.learn`: what a request says (validated), and its trace;
* :mod:`.relay`: each SSE event learned from, usage stripped or energy added;
* :mod:`.forward`: the aiohttp app that forwards every request;
* :mod:`.upstream`: the shared context, the upstream call, headers, error answers;
* :mod:`.completion`: a completion learned from and answered with its energy;
* :mod:`.work`: work events and request infos from a trace's timing;
* :mod:`.energy`: the provisional energy priced by the live fitted model;
* :mod:`.tap`: the proxy as a :class:`~sidecar.taps.tap.Tap` on its own thread;
* :mod:`.wire`: the tap from the sidecar's config; :mod:`.cli`: ``jouletrace proxy``.
"""
