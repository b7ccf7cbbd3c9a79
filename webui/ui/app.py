"""The whole UI: a header (language links, log out) and one tab per page."""

from __future__ import annotations

import gradio as gr

from webui.i18n import LANGUAGES
from webui.studio import Studio
from webui.ui import (
    admin,
    gallery,
    img2img,
    inpaint,
    portrait,
    privacy_page,
    txt2img,
    upscale,
)
from webui.ui.common import label, viewer_of

CSS = """
#obscura-header {display:flex; justify-content:space-between; align-items:center}
#obscura-header a {margin-left: .8em}
footer {display:none !important}
"""


def header_links(personal: bool) -> None:
    """Plain links (buttons that navigate): gr.HTML would need 'unsafe-eval' in the CSP.
    "Log out" opens ``GET /logout``, which changes nothing and shows the button that POSTs."""
    with gr.Row(elem_id="obscura-nav"):
        for code, name in LANGUAGES.items():
            gr.Button(name, link=f"/?lang={code}", size="sm", elem_id=f"lang-{code}",
                      min_width=60, scale=0)
        if not personal:
            gr.Button(label("logout"), link="/logout", size="sm", elem_id="logout",
                      min_width=80, scale=0)


def build_blocks(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="Obscura", analytics_enabled=False, fill_width=True) as demo:
        with gr.Row(elem_id="obscura-header"):
            gr.Markdown(label("app_tagline"), elem_id="tagline")
            header_links(studio.accounts is None)
        with gr.Tabs():
            with gr.Tab(label("tab_txt2img"), id="txt2img", elem_id="tab-txt2img"):
                txt2img.build(studio)
            with gr.Tab(label("tab_img2img"), id="img2img", elem_id="tab-img2img"):
                img2img.build(studio)
            with gr.Tab(label("tab_portrait"), id="portrait", elem_id="tab-portrait"):
                portrait.build(studio)
            with gr.Tab(label("tab_inpaint"), id="inpaint", elem_id="tab-inpaint"):
                inpaint.build(studio)
            with gr.Tab(label("tab_upscale"), id="upscale", elem_id="tab-upscale"):
                upscale.build(studio)
            with gr.Tab(label("tab_gallery"), id="gallery", elem_id="tab-gallery"):
                gallery.build(studio)
            with gr.Tab(label("tab_privacy"), id="privacy", elem_id="tab-privacy"):
                privacy_page.build(studio)
            with gr.Tab(label("tab_admin"), id="admin", elem_id="tab-admin",
                        visible=False) as admin_tab:
                admin.build(studio)

        def on_load(request: gr.Request):
            viewer = viewer_of(studio, request)
            show_admin = studio.accounts is not None and viewer.is_admin
            return gr.Tab(visible=show_admin)

        demo.load(on_load, None, admin_tab, api_visibility="private")
    return demo
