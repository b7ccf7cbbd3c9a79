"""How every API route receives a request and answers: the caller is checked first (no route
can forget to), bodies are read into memory with a size limit and validated, and every error
becomes one JSON sentence (:mod:`webui.api.problems`), never a traceback. Nothing of a request
is logged, only the type of an unexpected error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from webui.api.auth import require_viewer
from webui.api.problems import ApiError, validation_problem
from webui.auth import Gate, Viewer

log = logging.getLogger("obscura.webui")
UNEXPECTED = ApiError(
    500, "internal_error", "Something went wrong on the server; the request was not completed."
)


class ApiRoute(APIRoute):
    """Every route of the API: the caller is checked first (no route can forget to), and every
    error of the route becomes a JSON answer."""

    gate: Gate | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        gate = self.gate

        async def answer(request: Request) -> Response:
            try:
                if gate is None:
                    raise RuntimeError("ApiRoute without a gate")
                request.state.api_viewer = await asyncio.to_thread(require_viewer, gate, request)
                return await handler(request)
            except ApiError as err:
                return err.response()
            except RequestValidationError as err:
                errors = err.errors()
                where = [str(p) for p in (errors[0].get("loc", ()) if errors else ())]
                name = where[-1] if where else "request"
                return ApiError(422, "invalid_value", f"{name}: invalid value.", name).response()
            except Exception as err:  # noqa: BLE001  (one sentence, never a traceback)
                log.error("api request failed: %s", type(err).__name__)
                return UNEXPECTED.response()

        return answer


def caller(request: Request) -> Viewer:
    """The caller :class:`ApiRoute` checked."""
    viewer: Viewer = request.state.api_viewer
    return viewer


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, read into memory (never a temp file) and refused past ``limit``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413, "body_too_large",
                f"The request is larger than {limit / 1_000_000:g} MB; send smaller pictures.",
            )
    if not body:
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_body", "The request body is not valid JSON.") from None
    finally:
        body[:] = b""


def parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_problem(err) from None
