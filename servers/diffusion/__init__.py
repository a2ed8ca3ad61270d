"""jouletrace's diffusion server: text-to-image and text-to-video with dynamic batching.

Requests with the same shape (model, size, frames, steps, guidance) are batched
into one pipeline call; each batch and each request is reported to the
sidecar as an OTLP span (batch id, members, work units = pixels x frames x
steps), so the sidecar can split each batch's measured energy among its
requests. Modules, one idea each:

* :mod:`.shapes`    requests, shapes and the limits that validate them
* :mod:`.batcher`   the queue: same-shape batching, faults, disconnects
* :mod:`.pipelines` diffusers pipelines from a folder, one call per batch (torch lives here)
* :mod:`.encode`    PNG / MP4 / GIF encoding of outputs
* :mod:`.tracing`   batch and request spans over OTLP/gRPC
* :mod:`.metrics`   the server's own Prometheus counters
* :mod:`.app`       the FastAPI app; :mod:`.cli` ``jouletrace diffusion serve``
"""
