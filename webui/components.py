"""Gradio components that never leave a picture in Gradio's file cache.

Gradio writes every image a handler returns into its cache and serves it by URL to anyone who
knows the URL. These subclasses hand pictures to the browser as ``data:`` URLs inside the
response instead (no file, nothing to fetch later), and give handlers the uploaded file's
cache path untouched (no decoding by Gradio, no converted copy), so that
:mod:`webui.uploads` can read it once and delete it.

The returned dictionaries deliberately carry no ``meta._type = gradio.FileData`` marker: that
marker is what makes Gradio move a value into its cache.
"""

from __future__ import annotations

import base64
from typing import Any

import gradio as gr
import gradio.component_meta
from gradio.data_classes import FileData

# Gradio writes a ``.pyi`` stub next to the source of every component subclass it sees (and
# fails on a read-only install). Not for ours: switched off while the classes below are made.
_write_stub = gradio.component_meta.create_or_modify_pyi
gradio.component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


def data_url(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


def _picture(url: str, name: str) -> dict[str, Any]:
    return {"url": url, "path": None, "orig_name": name, "mime_type": url[5:].split(";")[0]}


class PrivateImage(gr.Image):
    """An image input whose handler gets the upload's cache path (``str``) and nothing else;
    as an output it takes a ``data:`` URL."""

    def get_block_name(self) -> str:
        return "image"  # the browser side is Gradio's own image component

    def preprocess(self, payload: Any) -> str | None:
        if payload is None:
            return None
        return payload.path if isinstance(payload, FileData) else str(payload.path)

    def postprocess(self, value: Any) -> dict[str, Any] | None:  # type: ignore[override]
        if value is None:
            return None
        if not isinstance(value, str) or not value.startswith("data:image/"):
            raise TypeError("PrivateImage shows data: URLs only")
        return _picture(value, "obscura.png")


class PrivateGallery(gr.Gallery):
    """A gallery output that takes a list of ``data:`` URLs (or ``(url, caption)`` pairs)."""

    def get_block_name(self) -> str:
        return "gallery"

    def postprocess(self, value: Any) -> list[dict[str, Any]]:  # type: ignore[override]
        out = []
        for index, item in enumerate(value or [], start=1):
            url, caption = item if isinstance(item, tuple) else (item, None)
            if not isinstance(url, str) or not url.startswith("data:image/"):
                raise TypeError("PrivateGallery shows data: URLs only")
            out.append({"image": _picture(url, f"obscura-{index}.png"), "caption": caption})
        return out


class PrivateImageMask(gr.ImageMask):
    """The mask painter. The handler gets ``{"background", "layers", "composite"}`` whose
    values are an upload's cache path (``str``), never a decoded or converted copy.

    Gradio's editor can also send its layers to the server function ``accept_blobs``, which
    keeps them in memory under an id the browser picks, tied to no user, never swept. That
    function is switched off here (it is no server function any more, so the page does not
    offer it and ``component_server`` refuses it; the access guard closes the route as well):
    the browser then uploads the layers as files, owned and swept like every upload."""

    def get_block_name(self) -> str:
        return "imageeditor"

    def accept_blobs(self, data: Any) -> None:  # not a server function
        raise PermissionError("the blob route is closed")

    def preprocess(self, payload: Any) -> dict[str, Any] | None:  # type: ignore[override]
        if payload is None or getattr(payload, "id", None) is not None:
            return None  # a blob id: nothing is ever stored under one

        def raw(item: Any) -> str | None:
            if item is None:
                return None
            if isinstance(item, FileData):
                return item.path
            return getattr(item, "path", None)

        return {
            "background": raw(payload.background),
            "layers": [raw(layer) for layer in (payload.layers or [])],
            "composite": raw(payload.composite),
        }


class RawNumber(gr.Number):
    """A number input whose handler gets exactly what the client sent (``None``, a number, or
    whatever a script posts): the handler checks it and answers in the person's language.
    Gradio's own check raises before the handler, in English ("upstream app raised")."""

    def get_block_name(self) -> str:
        return "number"

    def preprocess(self, payload: Any) -> Any:
        return payload


class RawSlider(gr.Slider):
    """A slider whose handler gets exactly what the client sent (see :class:`RawNumber`)."""

    def get_block_name(self) -> str:
        return "slider"

    def preprocess(self, payload: Any) -> Any:
        return payload


gradio.component_meta.create_or_modify_pyi = _write_stub
