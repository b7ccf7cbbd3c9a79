"""The data-flow inventory: every place Obscura keeps anything, declared once, in code.

``docs/data-flows.md`` is generated from this module (``python -m privacy.inventory >
docs/data-flows.md``) and a test fails when the two drift apart. ``obscura audit`` compares the
real data directory and database with the declarations below: a file, table or column that is
not declared here is a finding.

Paths in ``files`` are relative to the data directory, ``/``-separated; ``*`` matches one path
segment (no ``/``), ``**`` matches any number of segments, and a pattern ending in ``/`` matches
folders only.

Biometric data (GDPR Art. 9, PIPL Art. 28): a store or flow that holds a face photo used for
its likeness, or anything computed from a face (a crop, a detector's box, an image embedding),
is marked ``biometric``. Such data is either encrypted on disk under a key held only in memory
(the spool) or in memory only, for one job; docs/privacy.md, *Biometric data*, explains it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import Literal

Medium = Literal["disk", "memory", "browser"]


@dataclass(frozen=True)
class Store:
    """One place where data is kept."""

    name: str
    holds: str
    where: str
    encryption: str
    retention: str
    readers: str
    medium: Medium
    files: tuple[str, ...] = ()  # patterns under the data dir that belong to this store
    encrypted_containers: tuple[str, ...] = ()  # of those, the ones that are ciphertext
    biometric: bool = False  # holds a face photo or anything derived from a face


@dataclass(frozen=True)
class Flow:
    """One step data takes; ``biometric`` when the data is a face or derived from one."""

    step: str
    biometric: bool = False


# table -> column -> what it holds. The audit refuses anything else in the accounts database.
DATABASE_TABLES: dict[str, dict[str, str]] = {
    "users": {
        "id": "random pseudonymous id (u_ + 32 hex digits); the only id used in files and logs",
        "username": "the login name (3-32 of a-z 0-9 _ -); no e-mail or phone number accepted",
        "role": "admin or member",
        "password_hash": "Argon2id hash (argon2-cffi, RFC 9106 parameters, own salt)",
        "public_key": "gallery public key (ML-KEM-768 + X25519); can seal, cannot open",
        "wrapped_private_key": "gallery private key, AES-256-GCM under an Argon2id password key",
        "retention_days": "how long gallery pictures are kept (0 = only this session)",
        "embed_parameters": "0/1: write prompt and settings into saved pictures (off by default)",
        "created_day": "the day (no time) the account was made",
    },
    "invites": {
        "code_hash": "SHA-256 of a one-time invite code (the code itself is shown once)",
        "role": "role the invite grants",
        "expires_at": "expiry time (seconds)",
        "created_by": "pseudonymous id of the admin who made it",
    },
    "tokens": {
        "id": "random token id",
        "user_id": "pseudonymous id of the token's owner",
        "name": "the owner's label for the token",
        "token_hash": "SHA-256 of the API token (the token itself is shown once)",
        "created_day": "day the token was made",
        "last_used_day": "day the token was last used",
    },
    "sessions": {
        "id_hash": "SHA-256 of the session token held by the browser",
        "user_id": "pseudonymous id of the logged-in account",
        "created_at": "login time (seconds), for the 12 h absolute limit",
        "last_seen_at": "last activity (to the minute), for the 30 min idle limit",
    },
}

STORES: tuple[Store, ...] = (
    Store(
        name="models",
        holds="Model weights and their config files, put there by the owner. No user data.",
        where="`<data-dir>/models/` (or the `models_dir` setting, which may be an AUTOMATIC1111 "
        "or ComfyUI models folder: only read, never written; and the `embeddings_dir` setting)",
        encryption="none (public, non-personal files)",
        retention="until the owner removes them",
        readers="the server process",
        medium="disk",
        files=("models/", "models/**"),
    ),
    Store(
        name="accounts database",
        holds="Accounts (username, role, secrets), invite codes, API tokens, sessions: see the "
        "table list below. No e-mail, phone number, real name, IP address or user agent.",
        where="`<data-dir>/obscura.db` (SQLite, mode 0600); `<data-dir>/accounts-mode`, an empty "
        "marker written with the first account, so a lost or damaged database is refused at "
        "start instead of falling back to personal mode",
        encryption="file not encrypted; every secret in it is a hash (Argon2id or SHA-256) or "
        "wrapped under the owner's password; secure_delete on, rollback journal (no WAL)",
        retention="accounts until deleted; sessions until logout or expiry (30 min idle, 12 h); "
        "invites until used or expired",
        readers="the server process; an administrator can list usernames and roles, reset a "
        "password, delete an account, but cannot unwrap a private key",
        medium="disk",
        files=("obscura.db", "obscura.db-journal", "accounts-mode"),
    ),
    Store(
        name="gallery",
        holds="Pictures kept for an account (accounts mode only).",
        where="`<data-dir>/gallery/<owner-id>/<picture-id>.key` and `.pic`",
        encryption="each picture under its own random 256-bit key (Cobblestone-256 = C2SP "
        "chunked AES-256-GCM); that key sealed with HPKE (ML-KEM-768 + X25519, HKDF-SHA256, "
        "AES-256-GCM) to the owner's public key",
        retention="per account, 30 days by default; 0 = deleted at logout or session end; "
        "deleting the account destroys the wrapped private key first",
        readers="only the owner, while logged in (the private key is unwrapped by the password)",
        medium="disk",
        files=("gallery/", "gallery/*/", "gallery/*/*.key", "gallery/*/*.pic", "gallery/*/.tmp-*"),
        encrypted_containers=("gallery/*/*.key", "gallery/*/*.pic", "gallery/*/.tmp-*"),
    ),
    Store(
        name="spool",
        holds="Clean (scrubbed) uploads waiting in the queue for their job: photos, masks, "
        "ControlNet pictures, IP-Adapter reference pictures and an edit model's reference "
        "pictures (FLUX.2 [klein], FLUX.1 Kontext, Qwen-Image-Edit). A reference photo of a face "
        "is biometric data; it waits here like any upload and nowhere else.",
        where="`<data-dir>/spool/<random-id>`",
        encryption="Cobblestone-256 under a random key held only in process memory; owner and "
        "id bound in the encryption context",
        retention="until the job ends (success, failure or cancel): key forgotten, file "
        "unlinked; leftovers of a crash are unreadable and removed at the next start",
        readers="the job's owner, through the server process, while the job waits",
        medium="disk",
        files=("spool/", "spool/.obscura-spool", "spool/[0-9a-f]*"),
        encrypted_containers=("spool/[0-9a-f]*",),
        biometric=True,
    ),
    Store(
        name="audit log",
        holds="Events (logins, logouts, accounts, invites, tokens, job started/ended with the "
        "outcome, gallery retention sweeps) with pseudonymous ids and minute-resolution times. "
        "A job's end means its spooled upload was shredded. Never a prompt, "
        "username, IP address, file name or picture.",
        where="`<data-dir>/audit/YYYY-MM-DD.jsonl`",
        encryption="none (holds nothing personal; fields are an allow-list)",
        retention="90 days by default, removed a whole day-file at a time (the server checks "
        "hourly)",
        readers="the server's operating-system user (the administrator)",
        medium="disk",
        files=("audit/", "audit/*.jsonl", "audit/.tmp-*"),
    ),
    Store(
        name="TLS files",
        holds="The server's certificate and private key (no user data).",
        where="`<data-dir>/tls/cert.pem`, `<data-dir>/tls/key.pem` (key mode 0600)",
        encryption="none (the key protects the connection; it is readable by the server user)",
        retention="until replaced",
        readers="the server process",
        medium="disk",
        files=("tls/", "tls/cert.pem", "tls/key.pem"),
    ),
    Store(
        name="config file",
        holds="Settings (host, port, TLS, limits, default retention). No user data.",
        where="`<data-dir>/obscura.toml` (optional)",
        encryption="none",
        retention="until the owner changes it",
        readers="the server process and the owner",
        medium="disk",
        files=("obscura.toml",),
    ),
    Store(
        name="RAM directory",
        holds="Gradio's upload cache (the upload as sent, with the original file name in its "
        "path, for the moment between Gradio writing it and the access guard moving it into "
        "memory, before the upload request is answered) and TMPDIR (large request bodies).",
        where="`$OBSCURA_RAM_DIR`, else `$XDG_RUNTIME_DIR/obscura`, else "
        "`/dev/shm/obscura-<uid>`; one `<pid>/` folder per server process (tmpfs, mode 0700)",
        encryption="none; memory only, never on a persistent disk",
        retention="the access guard deletes each upload (file and folder) as soon as Gradio "
        "wrote it, milliseconds; the folder is wiped at exit and folders of dead processes at "
        "start",
        readers="the server process",
        medium="memory",
    ),
    Store(
        name="keys in memory",
        holds="Spool keys; unwrapped gallery private keys of logged-in owners; the login "
        "throttle's counters under a daily HMAC key (no raw username or IP); each API caller's "
        "chosen model, VAE and CLIP skip (names of the server's shared library, never a LoRA "
        "or embedding name), by pseudonymous id (until restart); which upload path, Gradio "
        "session and job belong to which pseudonymous id (never written); finished jobs' "
        "results for up to 10 minutes unless fetched (with the names of the LoRAs a job ran "
        "without, for its owner only); uploads not yet taken by their job (the "
        "bytes as sent, at most 1 GiB in all).",
        where="server process memory only",
        encryption="not applicable; never written to disk",
        retention="spool keys until the job ends; private keys until logout or session expiry; "
        "throttle until a day passes; uploads until their job takes them, or 10 minutes unused "
        "(the mask painter's re-uploads 2); ownership of sessions and jobs a week after last "
        "use; a restart forgets all",
        readers="the server process",
        medium="memory",
    ),
    Store(
        name="loaded LoRAs and VAEs",
        holds="LoRA adapters and VAEs read from the models folder for recent jobs, on the "
        "device under opaque ids (obscura_lora_N, never a file's name), each with the path, size "
        "and time of the file it came from; during a job only, the tokens of the embeddings "
        "its prompts name, in the tokenizer. No user data: which LoRAs or embeddings a job used "
        "is not kept.",
        where="server process memory (and the GPU's) only",
        encryption="not applicable; never written to disk",
        retention="8 LoRAs and 2 VAEs per loaded model, least recently used dropped; all when the "
        "model is switched or the server restarts",
        readers="the server process",
        medium="memory",
    ),
    Store(
        name="face data of a job",
        holds="While a portrait job runs: its reference pictures decrypted from the spool, the "
        "face detector's boxes, the face crops, the CLIP image embeddings (IP-Adapter image "
        "tokens) made from them, and the ControlNet maps made from a photo. Biometric data.",
        where="server process memory (and the GPU's) during the job only: local variables of "
        "the job's code (core/control.py, core/faces.py), never a cache, a file, a log line, a "
        "result, a picture's metadata or the gallery",
        encryption="not applicable; never written to disk",
        retention="until the job ends, however it ends (done, failed, cancelled): the job's "
        "lists are emptied and a failed job's traceback frames cleared; what a caller learns "
        "is only whether a face was found (yes/no, in the API's answer to them)",
        readers="the server process, for that job",
        medium="memory",
        biometric=True,
    ),
    Store(
        name="loaded ControlNets and IP-Adapters",
        holds="ControlNet, IP-Adapter and CLIP image encoder weights read from the models "
        "folder for recent jobs, each with the path, size and time of its file. No user data.",
        where="server process memory (and the GPU's) only",
        encryption="not applicable; never written to disk",
        retention="2 ControlNets, 1 CLIP image encoder and 2 IP-Adapters, least recently used "
        "dropped; all at restart",
        readers="the server process",
        medium="memory",
    ),
    Store(
        name="browser page",
        holds="Pictures shown in the page (data: URLs) and, in personal mode, the only copy of "
        "the results; cookies `obscura_session` (random session token; HttpOnly, "
        "SameSite=Strict, Secure under TLS) and `obscura_lang` (the chosen language only). The "
        "zip of my pictures is built in memory and streamed, never written.",
        where="the user's browser tab",
        encryption="TLS in transit on LAN addresses",
        retention="until the tab is closed (Gradio run history is switched off)",
        readers="the user at that browser",
        medium="browser",
    ),
)

FLOWS: tuple[str, ...] = (
    "Upload: the browser sends a photo; it lands in the RAM directory (never on disk).",
    "Scrub: the handler reads it once, deletes the cached file, checks size and pixel limits, "
    "decodes in memory, applies EXIF orientation and rebuilds a picture with no metadata.",
    "API (/sdapi/v1): a client sends the prompt and base64 pictures (img2img, an edit model's "
    "reference pictures in init_images, ControlNet and IP-Adapter units, and the pictures to upscale of extra-single-image / extra-batch-images) "
    "in a JSON body, read into "
    "memory only (never a temp file; bounded in size); the pictures are decoded and scrubbed in "
    "memory, then wait and run as below; results go back as base64 PNGs in the JSON response and, "
    "with save_images, are sealed into the caller's gallery (accounts mode only).",
    "Wait: from the moment it is queued until its job starts, the clean picture is kept only in "
    "the spool, encrypted under a key held only in memory.",
    "Run: the worker decrypts in memory and runs the model; when the job ends in any way the "
    "spool key is forgotten and the file unlinked.",
    "Return: the picture goes back to the browser as an in-memory response (no plaintext file), "
    "labelled as AI-generated (IPTC digital source type) and nothing else unless the user "
    "opted in to saving parameters.",
    "Keep (accounts mode): the picture is stored in the owner's gallery, sealed to the owner's "
    "public key, and swept when its retention ends.",
    "Log: the audit log records that a job started and ended, with pseudonymous ids only.",
)

# A portrait (the Portrait page, or an IP-Adapter unit with a face crop through the API): where
# the face goes. Biometric steps are marked.
PORTRAIT_FLOWS: tuple[Flow, ...] = (
    Flow("Reference: a face photo (the photo itself, or an IP-Adapter unit's picture) is "
         "uploaded, scrubbed in memory and waits in the spool, encrypted, like any upload.",
         biometric=True),
    Flow("Detect and crop: when the job starts, the worker decrypts it in memory; OpenCV's "
         "Haar cascade (shipped in the opencv wheel, nothing downloaded) finds the face's box "
         "and the face is cropped, in memory only.", biometric=True),
    Flow("Encode: the CLIP image encoder turns the crop into image embeddings, which the "
         "IP-Adapter adds to the model's attention, on the device, for this job only.",
         biometric=True),
    Flow("End: when the job ends in any way, the crops, boxes and embeddings are dropped with "
         "the job, and the reference's spool key is forgotten and its file unlinked.",
         biometric=True),
    Flow("Answer: the picture goes back like any other; its parameters (only when opted in) "
         "name the units' settings and models, and the API's answer says whether a face was "
         "found (yes/no). No crop, box, embedding or landmark is logged, cached, put in a "
         "picture, kept in the gallery or sent anywhere."),
    Flow("Detect maps (POST /controlnet/detect): the pictures are scrubbed and the map made in "
         "memory and answered; never spooled, never logged."),
)


def store_for(relative_path: str, *, is_dir: bool = False) -> Store | None:
    """The store a path under the data dir belongs to, or ``None`` if it is undeclared."""
    for store in STORES:
        for pattern in store.files:
            if pattern.endswith("/") and not is_dir:
                continue
            if path_matches(relative_path, pattern.rstrip("/")):
                return store
    return None


def is_encrypted_container(relative_path: str) -> bool:
    """True when the path is declared as ciphertext (its magic header is checked separately)."""
    return any(
        path_matches(relative_path, pattern)
        for store in STORES
        for pattern in store.encrypted_containers
    )


def path_matches(relative_path: str, pattern: str) -> bool:
    """Segment-wise glob: ``*`` is one segment, ``**`` any number of segments."""
    return _match(PurePosixPath(relative_path).parts, PurePosixPath(pattern).parts)


def _match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def render_markdown() -> str:
    """``docs/data-flows.md``: everything above, for people who do not read Python."""
    out = [
        "<!-- Generated by `python -m privacy.inventory > docs/data-flows.md`; do not edit. -->",
        "# Data flows and stores",
        "",
        "Every place Obscura keeps anything, what it holds, how it is protected, how long it "
        "stays and who can read it. This page is generated from `privacy/inventory.py`; "
        "`obscura audit` checks a real installation against the same declarations.",
        "",
        "## The path of one photo",
        "",
    ]
    out += [f"{number}. {step}" for number, step in enumerate(FLOWS, start=1)]
    out += ["", "## The path of a face (portraits)", ""]
    out.append(
        "A face photo used for its likeness and everything computed from it are biometric data "
        "(GDPR Art. 9, PIPL Art. 28); docs/privacy.md, *Biometric data*, says what is kept, "
        "where and how long."
    )
    out.append("")
    out += [
        f"{number}. {'**Biometric: yes.** ' if flow.biometric else ''}{flow.step}"
        for number, flow in enumerate(PORTRAIT_FLOWS, start=1)
    ]
    out += ["", "## Stores", "", "| Store | Medium | Biometric | Where | Encryption | Retention |"]
    out += ["|---|---|---|---|---|---|"]
    for store in STORES:
        out.append(
            f"| {store.name} | {store.medium} | {'yes' if store.biometric else 'no'} | "
            f"{_cell(store.where)} | {_cell(store.encryption)} | {_cell(store.retention)} |"
        )
    for store in STORES:
        out += ["", f"### {store.name}", ""]
        out += [
            f"- **Holds:** {store.holds}",
            f"- **Where:** {store.where}",
            f"- **Medium:** {store.medium}",
            f"- **Biometric:** {'yes' if store.biometric else 'no'}",
            f"- **Encryption:** {store.encryption}",
            f"- **Retention:** {store.retention}",
            f"- **Who can read it:** {store.readers}",
        ]
        if store.files:
            patterns = ", ".join(f"`{pattern}`" for pattern in store.files)
            out.append(f"- **Files (under the data dir):** {patterns}")
    out += ["", "## Accounts database tables", ""]
    out.append(
        "Any other table or column is reported by `obscura audit`. "
        "There is no column for an e-mail address, phone number, real name, IP address or "
        "user agent."
    )
    for table, columns in DATABASE_TABLES.items():
        out += ["", f"### `{table}`", "", "| Column | Holds |", "|---|---|"]
        out += [f"| `{column}` | {_cell(text)} |" for column, text in columns.items()]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
