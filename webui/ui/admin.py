"""Admin (administrators only): users, invite codes, API tokens, the retention default.
An administrator manages accounts but has no way to open anyone's gallery."""

from __future__ import annotations

import gradio as gr

from webui.i18n import error_text, language_of, text
from webui.studio import Studio
from webui.ui.common import account_viewer, label


def build(studio: Studio) -> None:
    accounts = studio.accounts
    if accounts is None:
        return
    gr.Markdown(label("admin_note"))
    refresh = gr.Button(label("admin_refresh"), elem_id="admin-refresh")
    users = gr.Dataframe(headers=["user", "role", "since"], interactive=False,
                         label=label("admin_users"), elem_id="admin-users")
    with gr.Row():
        invite = gr.Button(label("admin_new_invite"), elem_id="admin-invite")
        token_name = gr.Textbox(label=label("admin_tokens"), value="script", max_length=40)
        token = gr.Button(label("admin_new_token"), elem_id="admin-token")
    secret = gr.Textbox(label="", interactive=False, elem_id="admin-secret")
    with gr.Row():
        doomed = gr.Textbox(label=label("admin_delete_name"), max_length=64,
                            elem_id="admin-delete-name")
        delete = gr.Button(label("admin_delete_user"), variant="stop", elem_id="admin-delete")
    # The default comes from retention_days in obscura.toml (docs/configuration.md).
    gr.Number(studio.settings.retention_days, label=label("admin_retention_default"),
              interactive=False, elem_id="admin-retention")

    def require_admin(request: gr.Request):
        viewer = account_viewer(studio, request)
        if not viewer.is_admin:
            raise gr.Error(text("admin_only", language_of(request)), print_exception=False)
        return viewer

    def list_users(request: gr.Request):
        require_admin(request)
        return [[u.username, u.role, u.created_day] for u in accounts.list_users()]

    def make_invite(request: gr.Request):
        viewer = require_admin(request)
        lang = language_of(request)
        try:
            code = accounts.create_invite(created_by=viewer.user_id)
        except Exception as err:  # noqa: BLE001
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        return text("invite_made", lang, code=code)

    def make_token(name: str, request: gr.Request):
        viewer = require_admin(request)
        lang = language_of(request)
        try:
            value = accounts.create_token(viewer.user_id, (name or "").strip())
        except Exception as err:  # noqa: BLE001
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        return text("token_made", lang, token=value)

    def delete_user(username: str, request: gr.Request):
        viewer = require_admin(request)
        lang = language_of(request)
        try:
            user_id = accounts.user_id_for((username or "").strip().lower())
            if user_id == viewer.user_id:
                raise gr.Error(text("cannot_delete_self", lang), print_exception=False)
            for job in studio.queue.jobs_of(user_id):
                job.cancel()
            accounts.delete_user(user_id)  # the wrapped key first: pictures unreadable now
            if studio.gallery is not None:
                studio.gallery.delete_owner(user_id)
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001  (AccountError: one sentence)
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        return text("user_deleted", lang), list_users(request), ""

    refresh.click(list_users, None, users, api_visibility="private")
    delete.click(delete_user, doomed, [secret, users, doomed], api_visibility="private")
    invite.click(make_invite, None, secret, api_visibility="private")
    token.click(make_token, token_name, secret, api_visibility="private")
