"""Gallery (accounts mode): the owner's pictures, decrypted on demand with the key unlocked at
login; download and delete. Nothing decrypted is written anywhere: thumbnails are data URLs."""

from __future__ import annotations

import gradio as gr

from privacy.errors import PrivacyError
from webui.components import PrivateGallery, data_url
from webui.i18n import error_text, language_of, text
from webui.studio import Studio
from webui.ui.common import label, viewer_of

SHOWN = 60  # newest pictures decrypted per refresh


def open_pictures(studio: Studio, request: gr.Request) -> tuple[list[str], list[str]]:
    """(data URLs, picture ids) of the viewer's newest pictures."""
    viewer = viewer_of(studio, request)
    if studio.gallery is None or viewer.session is None:
        return [], []
    key = viewer.session.private_key
    urls, ids = [], []
    for info in studio.gallery.list(viewer.user_id)[:SHOWN]:
        try:
            picture = studio.gallery.open(viewer.user_id, info.id, key)
        except PrivacyError:
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
