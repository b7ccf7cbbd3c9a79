"""The model library over the AUTOMATIC1111 API (issue 11), and what real clients tripped on.

One accounts-mode server per module, started as ``obscura serve`` starts one, whose models folder
holds the demo models plus tiny artefacts built here in A1111's folder names: a Kohya LoRA for the
demo UNet (with trainer metadata that must not leak), a VAE (the demo's own weights, halved), a
textual-inversion embedding and a tiny RealESRGAN-Compact upscaler. Clients: ``webuiapi`` (a
client nobody here wrote) and raw ``httpx`` for auth headers and bad input.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import webuiapi
from safetensors.torch import load_file, save_file

from tests.webui.test_api import (
    PASSWORD,
    PROMPT,
    SD,
    SDXL,
    Member,
    Running,
    assert_error,
    member,
    png_of,
    small,
    start_server,
)

LORA, VAE, EMBEDDING, UPSCALER = "otter-style", "tiny-vae", "otter-token", "tiny-4x"
SECRET = "/home/trainer-jane/datasets/private-photos"  # trainer metadata: must never be served


# -- tiny artefacts -----------------------------------------------------------------------
def kohya_lora(rank: int = 2) -> dict[str, torch.Tensor]:
    """A Kohya-format LoRA on the demo SD UNet's attention projections (32 wide)."""
    gen = torch.Generator().manual_seed(5)
    tensors: dict[str, torch.Tensor] = {}
    for block in ("down_blocks_1_attentions_0", "up_blocks_0_attentions_0", "mid_block_attentions_0"):
        for proj in ("attn1_to_q", "attn1_to_k", "attn1_to_v", "attn2_to_q"):
            key = f"lora_unet_{block}_transformer_blocks_0_{proj}"
            tensors[f"{key}.lora_down.weight"] = torch.randn(rank, 32, generator=gen)
            tensors[f"{key}.lora_up.weight"] = torch.randn(32, rank, generator=gen)
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    return tensors


def tiny_compact(scale: int = 4, features: int = 4) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact (RealESRGAN Compact) with one body conv: spandrel's key names."""
    gen = torch.Generator().manual_seed(6)
    return {
        "body.0.weight": torch.randn(features, 3, 3, 3, generator=gen) * 0.1,
        "body.0.bias": torch.zeros(features),
        "body.1.weight": torch.full((features,), 0.25),
        "body.2.weight": torch.randn(features, features, 3, 3, generator=gen) * 0.1,
        "body.2.bias": torch.zeros(features),
        "body.3.weight": torch.full((features,), 0.25),
        "body.4.weight": torch.randn(3 * scale * scale, features, 3, 3, generator=gen) * 0.1,
        "body.4.bias": torch.zeros(3 * scale * scale),
    }


def build_library(folder: Path, demo_models: Path) -> None:
    for name in (SD, SDXL):
        shutil.copytree(demo_models / name, folder / name)
    for sub in ("Lora/styles", "VAE", "embeddings", "ESRGAN"):
        (folder / sub).mkdir(parents=True)
    metadata = {"ss_base_model_version": "sd_v1", "ss_output_name": "janes-otters",
                "ss_dataset_dirs": json.dumps({SECRET: {"n_repeats": 1}}),
                "ss_sd_model_name": f"{SECRET}/base.safetensors"}
    save_file(kohya_lora(), str(folder / "Lora/styles" / f"{LORA}.safetensors"), metadata)
    vae = load_file(str(next((demo_models / SD / "vae").glob("*.safetensors"))))
    halved = {k: (v * 0.5 if k.startswith("decoder.conv_out") else v) for k, v in vae.items()}
    save_file(halved, str(folder / "VAE" / f"{VAE}.safetensors"))
    save_file({"emb_params": torch.randn(2, 32)}, str(folder / "embeddings" / f"{EMBEDDING}.safetensors"))
    save_file(tiny_compact(), str(folder / "ESRGAN" / f"{UPSCALER}.safetensors"))
    (folder / "Lora" / "pickled.ckpt").write_bytes(b"not opened")


@pytest.fixture(scope="module")
def library_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("library-models")
    build_library(folder, models_dir)
    return folder


@pytest.fixture(scope="module")
def server(library_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start_server(tmp_path_factory.mktemp("library"), library_dir, accounts=True,
                            default_model=SD)


@pytest.fixture(autouse=True)
def forgiven(request: pytest.FixtureRequest) -> None:
    """Failed tokens from 127.0.0.1 add up across tests; each test starts a quiet day later."""
    if "server" in request.fixturenames:
        request.getfixturevalue("server").clock[0] += 2 * 86400


@pytest.fixture(scope="module")
def alice(server: Running) -> Member:
    return member(server, "alice")


@pytest.fixture(scope="module")
def bob(server: Running) -> Member:
    return member(server, "bob")


def api(server: Running, who: Member, name: str = "alice") -> webuiapi.WebUIApi:
    client = webuiapi.WebUIApi(baseurl=f"{server.url}/sdapi/v1", sampler="Euler a", steps=2)
    client.set_auth(name, who.token)
    return client


def get(server: Running, who: Member, path: str, **kwargs: Any) -> Any:
    response = httpx.get(f"{server.url}/sdapi/v1/{path}", headers=who.bearer, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


# -- what clients tripped on --------------------------------------------------------------
def test_get_root_with_basic_user_and_token_answers_the_ui(server: Running, alice: Member):
    """SDAI checks a server with ``GET /`` and the API's HTTP Basic credentials."""
    response = httpx.get(f"{server.url}/", auth=("alice", alice.token))
    assert response.status_code == 200, response.text
    assert "<html" in response.text.lower()
    wrong = httpx.get(f"{server.url}/", auth=("alice", "not-a-token"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic ")
    password = httpx.get(f"{server.url}/", auth=("alice", PASSWORD))  # a password is no token
    assert password.status_code == 401


def test_a_401_from_the_api_asks_for_basic_auth(server: Running):
    for method, path in [("GET", "sd-models"), ("POST", "txt2img"), ("GET", "loras")]:
        response = httpx.request(method, f"{server.url}/sdapi/v1/{path}", json=small())
        assert_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Basic realm=")
    # A browser fetch without credentials outside the API gets no Basic prompt (no dialog).
    assert "www-authenticate" not in httpx.get(f"{server.url}/gradio_api/info").headers


def test_a_scheduler_a1111_accepts_paints_as_in_a1111(server: Running, alice: Member):
    """Open WebUI's settings page suggests "Euler a" with "Karras": a 200, on Karras sigmas."""
    client = api(server, alice)
    result = client.txt2img(prompt=PROMPT, width=64, height=64, steps=3, seed=4,
                            sampler_name="Euler a", scheduler="Karras")
    assert result.info["sampler_name"] == "Euler a Karras"
    assert result.info["scheduler"] == "Karras"
    assert result.info["extra_generation_params"]["Schedule type"] == "Karras"
    plain = client.txt2img(prompt=PROMPT, width=64, height=64, steps=3, seed=4,
                           sampler_name="Euler a", scheduler="automatic")
    assert plain.info["scheduler"] == "Automatic"
    assert list(result.image.getdata()) != list(plain.image.getdata())
    for unknown in ("polyexponential", "Align Your Steps", "no such schedule"):
        response = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                              json=small(sampler_name="DPM++ 2M", scheduler=unknown))
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert info["scheduler"] == "Automatic" and info["sampler_name"] == "DPM++ 2M"
        assert "scheduler" in info["obscura_ignored"]
    schedulers = [s["name"] for s in client.get_schedulers()]
    assert {"automatic", "karras", "exponential", "sgm_uniform"} <= set(schedulers)


# -- the library listings --------------------------------------------------------------------
def test_loras_in_a1111_shape_without_server_paths_or_training_metadata(server: Running,
                                                                         alice: Member):
    loras = api(server, alice).get_loras()
    assert loras == [{"name": LORA, "alias": LORA, "path": f"Lora/styles/{LORA}.safetensors",
                      "metadata": {"ss_base_model_version": "sd_v1"}}]
    raw = httpx.get(f"{server.url}/sdapi/v1/loras", headers=alice.bearer).text
    for leak in ("trainer-jane", "janes-otters", str(server.studio.settings.models_path)):
        assert leak not in raw
    assert "pickled" not in raw  # a refused pickle is not offered


def test_embeddings_vaes_modules_hypernetworks_upscalers_latent_modes(server: Running,
                                                                       alice: Member):
    embeddings = get(server, alice, "embeddings")
    assert embeddings == {"loaded": {EMBEDDING: {"step": None, "sd_checkpoint": None,
                                                 "sd_checkpoint_name": None, "shape": 32,
                                                 "vectors": 2}}, "skipped": {}}
    vaes = get(server, alice, "sd-vae")
    assert vaes == [{"model_name": f"{VAE}.safetensors", "filename": f"VAE/{VAE}.safetensors"}]
    assert get(server, alice, "sd-modules") == vaes
    assert get(server, alice, "hypernetworks") == []
    upscalers = get(server, alice, "upscalers")
    assert [u["name"] for u in upscalers] == ["None", "Lanczos", "Nearest", UPSCALER]
    assert upscalers[-1] == {"name": UPSCALER, "model_name": "RealESRGAN Compact",
                             "model_path": f"ESRGAN/{UPSCALER}.safetensors", "model_url": None,
                             "scale": 4}
    modes = [m["name"] for m in get(server, alice, "latent-upscale-modes")]
    assert modes[0] == "Latent" and "Latent (nearest-exact)" in modes
    assert all(set(u) == {"name", "model_name", "model_path", "model_url", "scale"}
               for u in upscalers)


def test_refresh_finds_new_files_and_every_listing_needs_a_caller(server: Running,
                                                                   alice: Member,
                                                                   library_dir: Path):
    extra = library_dir / "Lora" / "second-style.safetensors"
    save_file(kohya_lora(rank=1), str(extra))
    try:
        assert [lo["name"] for lo in get(server, alice, "loras")] == [LORA]
        response = httpx.post(f"{server.url}/sdapi/v1/refresh-loras", headers=alice.bearer)
        assert response.status_code == 200
        assert sorted(lo["name"] for lo in get(server, alice, "loras")) == sorted(["second-style", LORA])
    finally:
        extra.unlink()
        httpx.post(f"{server.url}/sdapi/v1/refresh-vae", headers=alice.bearer)
    assert [lo["name"] for lo in get(server, alice, "loras")] == [LORA]
    for path in ("loras", "embeddings", "hypernetworks", "sd-vae", "sd-modules", "upscalers",
                 "latent-upscale-modes"):
        response = httpx.get(f"{server.url}/sdapi/v1/{path}")
        assert response.status_code == 401, path
    for path in ("refresh-loras", "refresh-vae", "refresh-embeddings"):
        assert httpx.post(f"{server.url}/sdapi/v1/{path}").status_code == 401, path


# -- options and override_settings ----------------------------------------------------------
def test_options_keep_vae_and_clip_skip_per_caller(server: Running, alice: Member, bob: Member):
    client, other = api(server, alice), api(server, bob, "bob")
    assert client.get_options()["sd_vae"] == "Automatic"
    assert client.get_options()["CLIP_stop_at_last_layers"] == 1
    client.set_options({"sd_vae": f"{VAE}.safetensors", "CLIP_stop_at_last_layers": 2})
    try:
        options = client.get_options()
        assert options["sd_vae"] == f"{VAE}.safetensors"
        assert options["CLIP_stop_at_last_layers"] == 2
        assert other.get_options()["sd_vae"] == "Automatic"  # bob's choice is bob's
        assert other.get_options()["CLIP_stop_at_last_layers"] == 1
        result = client.txt2img(prompt=PROMPT, width=64, height=64, steps=2, seed=3)
        assert result.info["sd_vae_name"] == f"{VAE}.safetensors"
        assert result.info["clip_skip"] == 2
        theirs = other.txt2img(prompt=PROMPT, width=64, height=64, steps=2, seed=3)
        assert theirs.info["sd_vae_name"] is None and theirs.info["clip_skip"] == 1
    finally:
        client.set_options({"sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1})
    assert client.get_options()["sd_vae"] == "Automatic"


@pytest.mark.parametrize(
    ("options", "field"),
    [({"sd_vae": "no-such-vae.safetensors"}, "sd_vae"), ({"sd_vae": 3}, "sd_vae"),
     ({"CLIP_stop_at_last_layers": 13}, "CLIP_stop_at_last_layers"),
     ({"CLIP_stop_at_last_layers": 0}, "CLIP_stop_at_last_layers"),
     ({"CLIP_stop_at_last_layers": True}, "CLIP_stop_at_last_layers"),
     ({"CLIP_stop_at_last_layers": 1.5}, "CLIP_stop_at_last_layers"),
     ({"sd_vae": "Automatic", "CLIP_stop_at_last_layers": "many"}, "CLIP_stop_at_last_layers")],
)
def test_bad_options_are_one_sentence_and_change_nothing(server: Running, alice: Member,
                                                         options: dict, field: str):
    response = httpx.post(f"{server.url}/sdapi/v1/options", headers=alice.bearer, json=options)
    body = assert_error(response, 422)
    assert body["detail"].startswith(f"{field}: ")
    assert "no-such-vae" not in body["detail"]
    current = get(server, alice, "options")
    assert current["sd_vae"] == "Automatic" and current["CLIP_stop_at_last_layers"] == 1


def test_override_settings_choose_vae_and_clip_skip_for_one_call(server: Running,
                                                                 alice: Member):
    def paint(**override: Any) -> dict[str, Any]:
        response = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                              json=small(override_settings=override))
        assert response.status_code == 200, response.text
        return response.json()

    with_vae = paint(sd_vae=VAE, CLIP_stop_at_last_layers=2)
    info = json.loads(with_vae["info"])
    assert info["sd_vae_name"] == f"{VAE}.safetensors" and info["clip_skip"] == 2
    assert info["extra_generation_params"]["Clip skip"] == 2
    assert not any(name.startswith("override_settings") for name in info["obscura_ignored"])
    after = json.loads(paint()["info"])  # for one call only
    assert after["sd_vae_name"] is None and after["clip_skip"] == 1
    response = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                          json=small(override_settings={"CLIP_stop_at_last_layers": 40}))
    assert assert_error(response, 422)["detail"].startswith(
        "override_settings.CLIP_stop_at_last_layers: ")
    response = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                          json=small(override_settings={"sd_vae": "secret-vae-name"}))
    assert "secret-vae-name" not in assert_error(response, 422)["detail"]


# -- the UI's controls ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def personal(library_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start_server(tmp_path_factory.mktemp("library-personal"), library_dir,
                            accounts=False, default_model=SD)


def test_the_pages_offer_vae_clip_skip_and_a_lora_helper(personal: Running):
    from gradio_client import Client

    config = httpx.get(f"{personal.url}/config").json()
    by_id = {c["props"].get("elem_id"): c["props"] for c in config["components"]
             if c["props"].get("elem_id")}
    assert [value for _label, value in by_id["vae"]["choices"]] == ["", VAE]
    assert [value for _label, value in by_id["lora-add"]["choices"]] == ["", LORA]
    assert by_id["clip-skip"]["maximum"] == 12 and by_id["clip-skip"]["value"] == 1
    ui = Client(personal.url + "/", verbose=False)
    info = ui.view_api(return_format="dict", print_info=False)
    for name in ("/txt2img", "/img2img", "/inpaint"):
        parameters = {p["parameter_name"]: p for p in info["named_endpoints"][name]["parameters"]}
        assert {"vae", "clip_skip"} <= set(parameters), name
        assert all(p["parameter_has_default"] for p in parameters.values()), name
    pictures, _preview, status, *_ = ui.predict(
        prompt="a fox", width=64, height=64, num_inference_steps=2, vae=VAE, clip_skip=2,
        api_name="/txt2img")
    assert len(pictures) == 1 and "seed" in status
    with pytest.raises(Exception, match="CLIP skip must be a whole number between 1 and 12"):
        ui.predict(prompt="a fox", width=64, height=64, num_inference_steps=2, clip_skip=13,
                   api_name="/txt2img")


def test_the_lora_helper_appends_one_tag_for_a_library_lora(personal: Running):
    from webui.ui.common import with_lora

    # The page's event, as the browser sends it: choosing the LoRA rewrites the prompt box
    # and resets the picker.
    config = httpx.get(f"{personal.url}/config").json()
    prompt_box = next(c["id"] for c in config["components"]
                      if c["props"].get("elem_id") == "txt2img-prompt")
    pickers = {c["id"] for c in config["components"] if c["props"].get("elem_id") == "lora-add"}
    assert len(pickers) == 3  # one on each painting page
    event = next(d for d in config["dependencies"]
                 if d["inputs"][:1] == [prompt_box] and d["inputs"][1:] == d["targets"][0][:1]
                 and d["targets"][0][0] in pickers)
    with httpx.Client(base_url=personal.url) as http:
        joined = http.post("/gradio_api/queue/join", json={
            "data": ["an otter", LORA], "fn_index": event["id"], "session_hash": "lora-pick-1",
            "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        with http.stream("GET", "/gradio_api/queue/data?session_hash=lora-pick-1") as events:
            done = next(json.loads(line[5:]) for line in events.iter_lines()
                        if line.startswith("data:") and "process_completed" in line)
    assert done["success"], done
    assert done["output"]["data"][:2] == [f"an otter, <lora:{LORA}:1>", ""]

    studio = personal.studio
    assert with_lora(studio, "", LORA) == f"<lora:{LORA}:1>"
    assert with_lora(studio, "an otter ", LORA) == f"an otter, <lora:{LORA}:1>"
    once = with_lora(studio, "an otter", LORA)
    assert with_lora(studio, once, LORA) == once  # named already
    assert with_lora(studio, f"x <lora:{LORA}:0.4>", LORA) == f"x <lora:{LORA}:0.4>"
    assert with_lora(studio, "an otter", "not-in-the-library") == "an otter"
    long = "x" * 3995
    assert with_lora(studio, long, LORA) == long  # would pass the prompt's length


def test_clip_skip_vae_and_a_lora_tag_change_the_picture(server: Running, alice: Member):
    """The choices reach the engine: each one changes the pixels of the same seed."""

    def pixels(prompt: str = PROMPT, **override: Any) -> bytes:
        response = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                              json=small(prompt=prompt, seed=11, sampler_name="Euler",
                                         override_settings=override))
        assert response.status_code == 200, response.text
        return png_of(response.json()["images"][0]).convert("RGB").tobytes()

    plain = pixels()
    assert pixels() == plain  # the same seed, the same picture
    assert pixels(CLIP_stop_at_last_layers=2) != plain
    assert pixels(sd_vae=f"{VAE}.safetensors") != plain
    assert pixels(f"{PROMPT} <lora:{LORA}:1>") != plain
    assert pixels(f"{PROMPT} <lora:{LORA}:0>") == plain  # weight 0 is a no-op
    assert pixels() == plain  # nothing of the last call stays behind


def test_overrides_never_outlive_the_call_and_say_so(server: Running, alice: Member):
    """AUTOMATIC1111 keeps overrides for everyone when asked not to restore them; Obscura keeps
    them for nobody (``POST options`` is each caller's own) and names the field as ignored."""
    response = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                          json=small(override_settings={"CLIP_stop_at_last_layers": 2},
                                     override_settings_restore_afterwards=False))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["clip_skip"] == 2
    assert "override_settings_restore_afterwards" in info["obscura_ignored"]
    assert get(server, alice, "options")["CLIP_stop_at_last_layers"] == 1


@pytest.mark.parametrize(
    "prompt", ["x <lora:not-installed:1>", "x <lora:otter-style:abc>", "x <lora::1>",
               "(x:1.2.3) <lora:otter-style:1>"],
)
def test_a_bad_lora_tag_is_a_422_naming_the_prompt(server: Running, alice: Member, prompt: str):
    response = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                          json=small(prompt=prompt))
    body = assert_error(response, 422, "prompt")
    assert body["detail"].startswith("prompt: ")
    assert server.studio.queue.jobs_of(alice.user_id) == []


def test_a_missing_lora_runs_without_only_when_asked_and_the_answer_says_so(
    server: Running, alice: Member
):
    body = small(prompt="x <lora:not-installed:1>")
    refused = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                         json=body)
    assert refused.status_code == 422  # never silently
    painted = httpx.post(f"{server.url}/sdapi/v1/txt2img", headers=alice.bearer, timeout=60,
                         json={**body, "obscura_allow_missing_networks": True})
    assert painted.status_code == 200, painted.text
    skipped = json.loads(painted.json()["info"])["obscura_skipped_networks"]
    assert [(s["kind"], s["name"]) for s in skipped] == [("lora", "not-installed")]
    assert skipped[0]["reason"]
