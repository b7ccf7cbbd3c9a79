"""Obscura's generation engine: model registry, pipelines, and the job queue.

Knows nothing of users, encryption or HTTP. ``core.offline`` is imported first so that no
library below can reach the network.
"""

from core import offline as _offline  # noqa: F401  (must stay the first import)
