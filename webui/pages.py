"""The pages served outside Gradio: log in, register with an invite code, log out.

Plain server-rendered HTML with inline styles (allowed by the CSP, nothing fetched elsewhere),
in the visitor's language, and the sentence that says exactly what an account holds.
"""

from __future__ import annotations

from html import escape

from webui.i18n import LANGUAGES, text

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f6f5f3;color:#1f2937;
margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{background:#fff;max-width:26rem;width:100%;padding:2rem;border-radius:12px;
box-shadow:0 2px 16px rgba(0,0,0,.08)}
h1{font-size:1.4rem;margin:0 0 1rem}label{display:block;margin:.8rem 0 .3rem;font-weight:600}
input{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #cbd5e1;border-radius:8px;
font-size:1rem}button{margin-top:1.2rem;width:100%;padding:.7rem;border:0;border-radius:8px;
background:#ea580c;color:#fff;font-size:1rem;cursor:pointer}
.note{font-size:.85rem;color:#475569;line-height:1.45;margin-top:1.2rem}
.error{background:#fee2e2;color:#991b1b;padding:.6rem;border-radius:8px}
.ok{background:#dcfce7;color:#166534;padding:.6rem;border-radius:8px}
nav{margin-top:1rem;font-size:.9rem;display:flex;justify-content:space-between}
"""


def _languages(path: str) -> str:
    links = " · ".join(
        f'<a href="{path}?lang={code}" data-lang="{code}">{escape(name)}</a>'
        for code, name in LANGUAGES.items()
    )
    return f'<span class="langs">{links}</span>'


def _page(lang: str, title: str, body: str) -> str:
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (
        f'<!doctype html><html lang="{html_lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _notice(error: str | None, notice: str | None) -> str:
    if error:
        return f'<p class="error" role="alert" id="error">{escape(error)}</p>'
    if notice:
        return f'<p class="ok" role="status" id="notice">{escape(notice)}</p>'
    return ""


def login_page(lang: str, error: str | None = None, notice: str | None = None) -> str:
    t = lambda key: escape(text(key, lang))  # noqa: E731
    body = (
        f"<h1>{t('login_title')}</h1>{_notice(error, notice)}"
        '<form method="post" action="/login">'
        '<input type="hidden" name="next" value="/">'
        f'<label for="username">{t("username")}</label>'
        '<input id="username" name="username" autocomplete="username" required maxlength="64">'
        f'<label for="password">{t("password")}</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" '
        'required maxlength="1024">'
        f'<button type="submit" id="login">{t("login_button")}</button></form>'
        f'<p class="note" id="what-is-stored">{t("login_what_is_stored")}</p>'
        f'<nav><a href="/register">{t("have_invite")}</a>{_languages("/login")}</nav>'
    )
    return _page(lang, text("login_title", lang), body)


def register_page(lang: str, error: str | None = None) -> str:
    t = lambda key: escape(text(key, lang))  # noqa: E731
    body = (
        f"<h1>{t('register_title')}</h1>{_notice(error, None)}"
        '<form method="post" action="/register">'
        f'<label for="invite">{t("invite_code")}</label>'
        '<input id="invite" name="invite" required maxlength="128" autocomplete="off">'
        f'<label for="username">{t("username")}</label>'
        '<input id="username" name="username" autocomplete="username" required maxlength="64">'
        f'<label for="password">{t("password")}</label>'
        '<input id="password" name="password" type="password" autocomplete="new-password" '
        'required maxlength="1024">'
        f'<label for="password2">{t("password_again")}</label>'
        '<input id="password2" name="password2" type="password" autocomplete="new-password" '
        'required maxlength="1024">'
        f'<button type="submit" id="register">{t("register_button")}</button></form>'
        f'<p class="note">{t("login_what_is_stored")}</p>'
        f'<nav><a href="/login">{t("have_account")}</a>{_languages("/register")}</nav>'
    )
    return _page(lang, text("register_title", lang), body)


def logout_page(lang: str) -> str:
    """``GET /logout``: a button that POSTs the logout (a GET never changes anything, so no
    ``<img src=/logout>`` on another page can end a session)."""
    t = lambda key: escape(text(key, lang))  # noqa: E731
    body = (
        f"<h1>{t('logout')}</h1><p>{t('logout_question')}</p>"
        '<form method="post" action="/logout">'
        f'<button type="submit" id="logout-confirm">{t("logout")}</button></form>'
        '<nav><a href="/">Obscura</a></nav>'
    )
    return _page(lang, text("logout", lang), body)
