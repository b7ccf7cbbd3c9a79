"""Privacy: what is stored about me right now, my retention, delete all of my pictures,
download all of them as a zip built in memory (``/my/pictures.zip``, :mod:`webui.downloads`)."""

from __future__ import annotations

import gradio as gr

from webui.i18n import error_text, language_of, text
from webui.studio import Studio
from webui.ui.common import account_viewer, label, viewer_of


def stored_summary(studio: Studio, request: gr.Request) -> str:
    viewer = viewer_of(studio, request)
    lang = language_of(request)
    if studio.accounts is None or studio.gallery is None:
        return text("stored_personal", lang)
    user = studio.accounts.user(viewer.user_id)
    settings = studio.accounts.settings(viewer.user_id)
    pictures = studio.gallery.list(viewer.user_id)
    folder = studio.gallery.root / viewer.user_id
    size = sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0
    jobs = [job for job in studio.queue.jobs_of(viewer.user_id) if not job.done]
    return text(
        "stored_account", lang, username=user.username, role=user.role, pictures=len(pictures),
        size=f"{size / 1024:.0f} KB", jobs=len(jobs), retention=settings.retention_days,
        embed=text("yes" if settings.embed_parameters else "no", lang),
    )


def build(studio: Studio) -> None:
    gr.Markdown(label("privacy_stored"), elem_id="privacy-title")
    summary = gr.Markdown("", elem_id="privacy-summary")
    refresh = gr.Button(label("privacy_refresh"), elem_id="privacy-refresh")
    def summarise(request: gr.Request) -> str:
        return stored_summary(studio, request)

    refresh.click(summarise, None, summary, api_visibility="private")
    if studio.accounts is None:
        return
    with gr.Row():
        retention = gr.Number(30, precision=0, minimum=0, maximum=3650,
                              label=label("retention_days"), elem_id="retention")
        embed = gr.Checkbox(False, label=label("embed_parameters"), elem_id="embed")
        save = gr.Button(label("retention_save"), elem_id="retention-save")
    with gr.Row():
        confirm = gr.Textbox(label=label("delete_all_confirm"), max_length=10,
                             elem_id="delete-confirm")
        delete_all = gr.Button(label("delete_all"), variant="stop", elem_id="delete-all")
    # Built in memory by webui.downloads on request; never a file in Gradio's cache.
    gr.Button(label("download_all"), link="/my/pictures.zip", elem_id="download-all")
    with gr.Row():
        token_name = gr.Textbox(label=label("admin_tokens"), value="script", max_length=40,
                                elem_id="my-token-name")
        make_token = gr.Button(label("admin_new_token"), elem_id="my-token")
    token_shown = gr.Textbox(label="", interactive=False, elem_id="my-token-secret")
    status = gr.Markdown("", elem_id="privacy-status")
    accounts, gallery = studio.accounts, studio.gallery

    def load_settings(request: gr.Request):
        viewer = viewer_of(studio, request)
        settings = accounts.settings(viewer.user_id)
        return settings.retention_days, settings.embed_parameters, stored_summary(studio, request)

    def save_settings(days: float | None, keep_parameters: bool, request: gr.Request):
        viewer = account_viewer(studio, request)
        lang = language_of(request)
        try:
            accounts.update_settings(viewer.user_id, retention_days=int(days or 0),
                                     embed_parameters=bool(keep_parameters))
        except Exception as err:  # noqa: BLE001  (AccountError: one sentence)
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        return text("saved", lang), stored_summary(studio, request)

    def remove_all(word: str, request: gr.Request):
        viewer = account_viewer(studio, request)
        lang = language_of(request)
        if (word or "").strip() != "DELETE":
            raise gr.Error(text("confirm_needed", lang), print_exception=False)
        count = gallery.delete_owner(viewer.user_id) if gallery else 0
        return text("deleted_all", lang, count=count), stored_summary(studio, request), ""

    def new_token(name: str, request: gr.Request) -> str:
        viewer = account_viewer(studio, request)
        lang = language_of(request)
        try:
            value = accounts.create_token(viewer.user_id, (name or "").strip())
        except Exception as err:  # noqa: BLE001  (TokenError: one sentence)
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        return text("token_made", lang, token=value)

    make_token.click(new_token, token_name, token_shown, api_visibility="private")
    save.click(save_settings, [retention, embed], [status, summary], api_visibility="private")
    delete_all.click(remove_all, confirm, [status, summary, confirm], api_visibility="private")
    refresh.click(load_settings, None, [retention, embed, summary], api_visibility="private")
