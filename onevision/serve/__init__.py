"""``onevision serve``: an OpenAI-compatible HTTP server over onevision pipelines (needs the ``serve`` extra).

::

    from onevision.serve import ServeConfig, create_app

    app = create_app({"tiny": onevision.load("tiny-ov")}, ServeConfig(max_batch_size=16))   # an ASGI app

See ``docs/serving.md``. Modules: :mod:`~onevision.serve.app` (endpoints, running), :mod:`~onevision.serve.batching`
(queue, batches, stopping), :mod:`~onevision.serve.media` (URLs -> checked files), :mod:`~onevision.serve.schema`
(request validation, response shapes), :mod:`~onevision.serve.metrics` (Prometheus).
"""

from __future__ import annotations

from onevision.serve.app import ServeConfig, create_app
from onevision.serve.media import MediaLimits

__all__ = ["MediaLimits", "ServeConfig", "create_app"]
