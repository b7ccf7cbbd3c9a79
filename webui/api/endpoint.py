"""How every API route receives a request and answers: the caller is checked first (no route
can forget to), bodies are read into memory with a size limit and validated, and every error
becomes one JSON sentence (:mod:`webui.api.problems`), never a traceback. Nothing of a request
is logged, only the type of an unexpected error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
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
                if request.method not in ("GET", "HEAD", "OPTIONS") and _form_type(request):
                    # What a <form> or a no-cors fetch can send without asking first: never
                    # taken, so no page of another site can make a call in anybody's name.
                    raise ApiError(415, "json_only", "Send the body as JSON, with the header "
                                   "'Content-Type: application/json'.")
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
TOO_DEEP = (
    f"The request body is nested too deeply; at most {MAX_JSON_DEPTH} levels of objects and "
    "lists."
)
_NOT_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def nested_too_deeply(body: bytes | bytearray) -> bool:
    """Whether ``body`` nests objects/lists past :data:`MAX_JSON_DEPTH`, found from its bytes
    before parsing, with C-speed byte replacements only (no parser recursion, nothing
    allocated per value, linear in the body for each level).

    Escaped backslashes and quotes go first, then the text between quotes; of the rest only the
    brackets count, and each pass removes the innermost pairs: one level per pass."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKET)
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            return False
        # The marker keeps a pass from also removing the pair a removal makes adjacent.
        inner = brackets.replace(b"[]", b"x").replace(b"{}", b"x").replace(b"x", b"")
        if len(inner) == len(brackets):
            return False  # not JSON: json.loads says so
        brackets = inner
    return bool(brackets)


class _NotFinite(Exception):
    pass


def _finite(text: str) -> float:
    number = float(text)  # 1e400 is inf
    if not math.isfinite(number):
        raise _NotFinite
    return number


def _no_constant(text: str) -> Any:
    raise _NotFinite  # NaN, Infinity, -Infinity: Python's json takes them, JSON does not


def _encodes(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(data: Any) -> None:
    """Refuse text that is not text: a lone surrogate such as ``"\\ud800"`` is valid JSON but
    encodes to nothing (a 500 later). Named by its field when it is one of the API's."""
    if _encodes(data):
        return
    from webui.api.schemas import Img2ImgRequest, Txt2ImgRequest

    field = None
    if isinstance(data, dict):
        known = set(Txt2ImgRequest.model_fields) | set(Img2ImgRequest.model_fields)
        # never echo a key the client made up
        field = next((key for key, value in data.items()
                      if key in known and not _encodes(value)), None)
    if field in ("prompt", "negative_prompt"):
        raise ApiError(422, "prompt_not_text", f"{field}: The prompt contains characters that "
                       "are not valid text.", field)
    prefix = f"{field}: " if field else "The request body "
    raise ApiError(422, "not_text", f"{prefix}contains characters that are not valid text.",
                   field)


def _load(body: bytes | bytearray) -> Any:
    if nested_too_deeply(body):
        raise ApiError(422, "nested_too_deeply", TOO_DEEP)
    try:
        data = json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except _NotFinite:
        raise ApiError(422, "not_finite", "The request body holds NaN or Infinity; "
                       "send finite numbers only.") from None
    except RecursionError:  # not reached after nested_too_deeply; kept as a floor
        raise ApiError(422, "nested_too_deeply", TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_body", "The request body is not valid JSON.") from None
    if _SURROGATE_ESCAPE.search(body):  # raw UTF-8 cannot hold a surrogate; only \\u escapes
        check_text(data)
    return data


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
        # Off the event loop: a large body takes a while to check and parse.
        return await asyncio.to_thread(_load, body)
    finally:
        body[:] = b""


def parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_problem(err) from None
    except RecursionError:
        raise ApiError(422, "nested_too_deeply", TOO_DEEP) from None


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def _form_type(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in FORM_TYPES
