"""An AUTOMATIC1111-compatible HTTP API under ``/sdapi/v1/`` (see docs/api.md).

``build_api_router(studio)`` returns the routes; the server includes them in its FastAPI app,
behind the same security headers, same-origin check and access guard as the UI.
"""

from webui.api.routes import build_api_router

__all__ = ["build_api_router"]
