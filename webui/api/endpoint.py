"""How every API route receives a request and answers: the caller is checked first (no route
can forget to), bodies are read into memory with a size limit and validated, and every error
becomes one JSON sentence (:mod:`webui.api.problems`), never a traceback. Nothing of a request
is logged, only the type of an unexpected error.
"""

from __future__ import annotations

import json
import logging
import math
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
                request.state.api_viewer = await require_viewer(gate, request)
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


MAX_JSON_DEPTH = 32  # objects and lists inside each other; AUTOMATIC1111 bodies need ~6


def too_deep(where: str | None = None) -> ApiError:
    field = _known(where)
    what = f"{field}: nested" if field else "The request body is nested"
    return ApiError(
        422, "nested_too_deeply",
        f"{what} too deeply; at most {MAX_JSON_DEPTH} levels of objects and lists.", field,
    )


class _NotFinite(Exception):
    pass


def _finite(text: str) -> float:
    number = float(text)  # 1e400 is inf
    if not math.isfinite(number):
        raise _NotFinite
    return number


def _no_constant(text: str) -> Any:
    raise _NotFinite  # NaN, Infinity, -Infinity: Python's json takes them, JSON does not


def _known(where: str | None) -> str | None:
    """``where`` when it is a field of the API's bodies: never echo a key the client made up."""
    from webui.api.schemas import Img2ImgRequest, Txt2ImgRequest

    known = where in Txt2ImgRequest.model_fields or where in Img2ImgRequest.model_fields
    return where if known else None


def _not_text(where: str | None) -> ApiError:
    field = _known(where)
    if field in ("prompt", "negative_prompt"):
        return ApiError(422, "prompt_not_text", f"{field}: The prompt contains characters that "
                        "are not valid text.", field)
    prefix = f"{field}: " if field else "The request body "
    return ApiError(422, "not_text", f"{prefix}contains characters that are not valid text.",
                    field)


def check_tree(data: Any) -> None:
    """Refuse bodies nested past :data:`MAX_JSON_DEPTH` and text that is not text (a lone
    surrogate such as ``"\\ud800"``: valid JSON, not encodable, a 500 later). One pass, no
    recursion; ``where`` is the top-level field a value belongs to."""
    stack: list[tuple[Any, int, str | None]] = [(data, 1, None)]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise _not_text(where) from None
        elif isinstance(value, dict):
            if depth > MAX_JSON_DEPTH:
                raise too_deep(where)
            for key, item in value.items():
                name = where if where is not None else key
                stack.append((key, depth, name))
                if isinstance(item, str | dict | list):
                    stack.append((item, depth + 1, name))
        elif isinstance(value, list):
            if depth > MAX_JSON_DEPTH:
                raise too_deep(where)
            stack.extend((item, depth + 1, where) for item in value
                         if isinstance(item, str | dict | list))


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, read into memory (never a temp file) and refused past ``limit``;
    nesting, NaN/Infinity and invalid text are refused here, before any field is looked at."""
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
        data = json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except _NotFinite:
        raise ApiError(422, "not_finite", "The request body holds NaN or Infinity; "
                       "send finite numbers only.") from None
    except RecursionError:  # the C parser gives up near depth 1000
        raise too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_body", "The request body is not valid JSON.") from None
    finally:
        body[:] = b""
    check_tree(data)
    return data


def parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_problem(err) from None
    except RecursionError:
        raise too_deep() from None
