"""Gallery (accounts mode): the owner's pictures, decrypted on demand with the key unlocked at
login; download and delete. Nothing decrypted is written anywhere: thumbnails are data URLs.

A picture that does not open with the owner's key (sealed to another key, e.g. after someone
swapped the stored public key, or damaged) is never hidden: it is listed as a grey tile saying
"can't be opened", and can be deleted like any other."""

from __future__ import annotations

import io
from functools import cache

import gradio as gr
from PIL import Image

from privacy.errors import GalleryError, PrivacyError
from webui.components import PrivateGallery, data_url
from webui.i18n import error_text, language_of, text
from webui.studio import Studio
from webui.ui.common import label, viewer_of

SHOWN = 60  # newest pictures decrypted per refresh
_UNOPENED = {"picture_refused": "gallery_sealed_elsewhere", "picture_damaged": "gallery_cannot_open"}


@cache
def placeholder() -> str:
    """A plain grey tile (no content) standing for a picture that cannot be opened."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return data_url(buffer.getvalue())


def open_pictures(
    studio: Studio, request: gr.Request
) -> tuple[list[str | tuple[str, str]], list[str]]:
    """(data URLs or (placeholder, caption) pairs, picture ids) of the newest pictures."""
    viewer = viewer_of(studio, request)
    if studio.gallery is None or viewer.session is None:
        return [], []
    key = viewer.session.private_key
    lang = language_of(request)
    urls: list[str | tuple[str, str]] = []
    ids: list[str] = []
    for info in studio.gallery.list(viewer.user_id)[:SHOWN]:
        try:
            picture = studio.gallery.open(viewer.user_id, info.id, key)
        except GalleryError as err:
            if err.code not in _UNOPENED:
                continue  # deleted meanwhile
            urls.append((placeholder(), text(_UNOPENED[err.code], lang)))
            ids.append(info.id)
            continue
        urls.append(data_url(picture, f"image/{info.kind}"))
        ids.append(info.id)
    return urls, ids


def build(studio: Studio) -> None:
    if studio.gallery is None:
        gr.Markdown(label("gallery_personal_mode"), elem_id="gallery-personal")
        return
    refresh = gr.Button(label("gallery_refresh"), elem_id="gallery-refresh")
    status = gr.Markdown("", elem_id="gallery-status")
    pictures = PrivateGallery(label=label("tab_gallery"), columns=4, height="auto",
                              buttons=["download", "fullscreen"], elem_id="gallery",
                              interactive=False)
    ids = gr.State([])
    selected = gr.State(None)
    delete = gr.Button(label("gallery_delete"), variant="stop", elem_id="gallery-delete")

    def load(request: gr.Request):
        try:
            urls, found = open_pictures(studio, request)
        except PrivacyError as err:
            raise gr.Error(error_text(err, language_of(request)), print_exception=False) from None
        note = "" if urls else text("gallery_empty", language_of(request))
        return urls, found, None, note

    def select(found: list[str], event: gr.SelectData):
        index = event.index if isinstance(event.index, int) else None
        return found[index] if index is not None and index < len(found) else None

    def remove(picture_id: str | None, request: gr.Request):
        viewer = viewer_of(studio, request)
        lang = language_of(request)
        if picture_id and studio.gallery is not None:
            studio.gallery.delete(viewer.user_id, picture_id)  # the owner's folder only
        urls, found, _, note = load(request)
        return urls, found, None, note or text("deleted", lang)

    outputs = [pictures, ids, selected, status]
    refresh.click(load, None, outputs, api_visibility="private")
    pictures.select(select, ids, selected, api_visibility="private")
    delete.click(remove, selected, outputs, api_visibility="private")
