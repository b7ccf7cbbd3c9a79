"""Engine commands: ``obscura generate``, ``obscura demo-model``, ``obscura models``.

Headless and offline. Input photos and masks are scrubbed (metadata dropped, orientation applied)
before the engine sees them; output files carry only the AI-generated label unless
``--embed-parameters`` is given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import click

from core.errors import InputError
from privacy.errors import PrivacyError
from webui.cli.options import (
    Command,
    data_dir_option,
    embeddings_dir_option,
    load,
    models_dir_option,
)
from webui.config import Settings

MEMORY_MODE_HELP = (
    "auto, full, model-offload, group-offload, sequential-offload, fp8-layerwise, bnb-8bit or "
    "bnb-4bit (default: auto, the planner's choice; see `obscura models`)."
)
FORMATS: dict[str, Literal["png", "webp", "jpeg"]] = {
    ".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg",
}


def _settings(
    data_dir: Path | None, models_dir: Path | None, embeddings_dir: Path | None = None
) -> Settings:
    settings: Settings = load(
        {"data_dir": data_dir, "models_dir": models_dir, "embeddings_dir": embeddings_dir}
    )
    return settings


def folders_option(func: Command) -> Command:
    """``--models-dir`` and ``--data-dir`` (engine commands take both)."""
    return data_dir_option(models_dir_option(func))


def library_folders_option(func: Command) -> Command:
    """``--models-dir``, ``--embeddings-dir`` and ``--data-dir``."""
    return data_dir_option(models_dir_option(embeddings_dir_option(func)))


def _read_upload(path: Path, *, mask: bool):  # -> PIL.Image.Image
    from privacy.scrub import scrub, scrub_mask

    data = path.read_bytes()
    return scrub_mask(data) if mask else scrub(data)


@click.command()
@click.option(
    "--prompt",
    required=True,
    help="What to paint. Use '-' to read it from standard input (keeps it out of shell history).",
)
@click.option("--negative-prompt", default="", show_default=False, help="What to avoid.")
@click.option(
    "--image",
    "image_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from this photo (image to image).",
)
@click.option(
    "--mask",
    "mask_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Repaint only the white area of this mask (inpainting; needs --image, same size).",
)
@click.option(
    "--reference",
    "reference_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A reference picture for an edit model (FLUX.2 [klein], FLUX.1 Kontext, Qwen-Image-Edit); repeat for up to 4.",
)
@click.option(
    "--strength",
    type=float,
    default=0.75,
    show_default=True,
    help="How much to change the photo: 0 keeps it, 1 ignores it.",
)
@click.option(
    "--model",
    default=None,
    help="Model name (see `obscura models`); default: the first real model, else the demo.",
)
@click.option(
    "--steps",
    "num_inference_steps",
    type=int,
    default=None,
    help="Denoising steps (1-150; default per model).",
)
@click.option(
    "--guidance",
    "guidance_scale",
    type=float,
    default=None,
    help="Guidance scale, how closely to follow the prompt (0-30; default per model).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed for a repeatable picture; random when absent (always printed).",
)
@click.option(
    "--width",
    type=int,
    default=None,
    help="Width in pixels, a multiple of 8 (16 for FLUX, SD 3.5, Z-Image, Qwen-Image; default per model, or the photo's).",
)
@click.option("--height", type=int, default=None, help="Height in pixels, a multiple of 8.")
@click.option(
    "--sampler",
    default=None,
    help="Sampler, e.g. 'Euler a', 'DPM++ 2M Karras', 'DDIM', 'UniPC', 'LCM' (see `obscura models --samplers`); FLUX, SD 3.5, Z-Image and Qwen-Image take Euler, Euler a, Heun and (most) UniPC, DPM++ 2M: see docs/models.md.",
)
@click.option(
    "--batch",
    "batch_size",
    type=int,
    default=1,
    show_default=True,
    help="Pictures to make (seeds seed, seed+1, ...).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output file (.png, .webp or .jpg); a batch adds -1, -2, ... to the name.",
)
@click.option(
    "--embed-parameters",
    is_flag=True,
    help="Write the prompt and settings into the file (off by default: outputs carry only the AI-generated label).",
)
@click.option("--device", default=None, help="auto, cpu, mps, cuda or cuda:N (default: auto).")
@click.option("--dtype", default=None, help="auto, float32, float16 or bfloat16 (default: auto).")
@click.option(
    "--memory-mode",
    default=None,
    help=MEMORY_MODE_HELP,
)
@library_folders_option
def generate(
    prompt: str,
    negative_prompt: str,
    image_path: Path | None,
    mask_path: Path | None,
    reference_paths: tuple[Path, ...],
    strength: float,
    model: str | None,
    num_inference_steps: int | None,
    guidance_scale: float | None,
    seed: int | None,
    width: int | None,
    height: int | None,
    sampler: str | None,
    batch_size: int,
    out_path: Path,
    embed_parameters: bool,
    device: str | None,
    dtype: str | None,
    memory_mode: str | None,
    data_dir: Path | None,
    models_dir: Path | None,
    embeddings_dir: Path | None = None,
) -> None:
    """Paint a picture from text, from a photo (--image), or into a masked area (--mask).

    Runs offline on this machine with a local model. Examples:

    \b
      obscura generate --prompt "a lighthouse at dusk, watercolour" --out out.png
      obscura generate --prompt "anime portrait" --image me.jpg --strength 0.6 --out anime.png
      obscura generate --prompt "a red scarf" --image me.jpg --mask scarf.png --out scarf.png
    """
    from core.engine import Engine, GenerationRequest
    from core.flow import MAX_REFERENCES
    from core.registry import ModelRegistry
    from privacy.output import encode_picture
    from webui.infotext import infotext

    fmt = FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise click.ClickException("The output file must end in .png, .webp or .jpg.")
    if prompt == "-":
        prompt = sys.stdin.read().strip()
    if mask_path is not None and image_path is None:
        raise click.ClickException("A mask needs a photo to paint into; add --image.")
    settings = _settings(data_dir, models_dir, embeddings_dir)
    try:
        image = _read_upload(image_path, mask=False) if image_path else None
        mask = _read_upload(mask_path, mask=True) if mask_path else None
        if len(reference_paths) > MAX_REFERENCES:
            raise click.ClickException(f"At most {MAX_REFERENCES} reference pictures (--reference).")
        references = [_read_upload(path, mask=False) for path in reference_paths]
        registry = ModelRegistry(settings.models_path, settings.embeddings_dir)
        engine = Engine(
            registry,
            device=device or settings.device,
            dtype=dtype or settings.dtype,
            memory_mode=memory_mode or settings.memory_mode,
            default_model=settings.default_model,
        )
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            image=image,
            mask=mask,
            references=references,
            strength=strength,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            width=width,
            height=height,
            batch_size=batch_size,
            seed=seed,
            sampler=sampler,
            model=model,
        )
        info = engine.validate(request)
        if info.is_demo:
            click.echo(f"Note: {info.label}", err=True)
        result = engine.generate(request)
    except (InputError, PrivacyError) as err:
        raise click.ClickException(str(err)) from None
    ignored = _ignored(result)
    if ignored:  # one line: what this model's family did not use (core/families.py)
        click.echo(f"Not used by this model: {', '.join(ignored)}.", err=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for index, picture in enumerate(result.images):
        target = (
            out_path
            if index == 0
            else out_path.with_name(f"{out_path.stem}-{index}{out_path.suffix}")
        )
        parameters = (
            infotext(prompt, negative_prompt, result, result.seeds[index])
            if embed_parameters
            else None
        )
        data = encode_picture(
            picture, fmt, photo_based=result.mode != "txt2img", parameters=parameters
        )
        target.write_bytes(data)
        click.echo(
            f"{target}  (seed {result.seeds[index]}, {result.width}x{result.height}, {result.sampler}, {result.model})"
        )


def _ignored(result) -> list[str]:  # result: core.engine.GenerationResult
    """The options of this run that the model did not use, as the engine reports them
    (``GenerationResult.extras["ignored"]``: a guidance-distilled model takes no negative prompt
    or CFG, a flow model no prompt weights), by their option names where they have one."""
    names: list[str] = []
    shown = {"negative_prompt": "--negative-prompt", "cfg_scale": "--guidance",
             "strength": "--strength", "emphasis": "prompt weights",
             "prompt_editing": "prompt editing", "prompt_truncated": "the end of the prompt"}
    for name in result.extras.get("ignored", []):
        flag = shown.get(name, name)
        if flag not in names:
            names.append(flag)
    return names


@click.command("demo-model")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--arch",
    type=click.Choice(["sd", "sdxl"]),
    default="sd",
    show_default=True,
    help="Architecture of the tiny model.",
)
@click.option(
    "--if-missing",
    is_flag=True,
    help="Do nothing when the models folder already holds a usable model.",
)
@folders_option
def demo_model(
    folder: Path | None, arch: str, if_missing: bool, data_dir: Path | None, models_dir: Path | None
) -> None:
    """Build the tiny random-weight demo model (draws noise) as a diffusers folder.

    FOLDER defaults to <models-dir>/demo-tiny-sd (or demo-tiny-sdxl). No download: the weights
    are random and the tokenizer is made locally. To paint real pictures, add a real model; see
    docs/models.md.
    """
    from core.demo import DEMO_NAME, save_demo_model
    from core.registry import ModelRegistry

    settings = _settings(data_dir, models_dir)
    if if_missing and ModelRegistry(settings.models_path).models:
        click.echo(f"A model is already installed in {settings.models_path}; nothing to do.")
        return
    from core.library import is_external_layout

    if folder is None and is_external_layout(settings.models_path):
        raise click.ClickException(
            "The models folder is an AUTOMATIC1111 or ComfyUI one, which Obscura never writes "
            "to; name a FOLDER for the demo model."
        )
    target = folder or settings.models_path / DEMO_NAME[arch]
    if target.exists() and any(target.iterdir()):
        raise click.ClickException("That folder is not empty; choose another or remove it first.")
    save_demo_model(target, arch=arch)  # type: ignore[arg-type]
    click.echo(
        f"Demo model written to {target} (random weights: it draws noise; see docs/models.md)."
    )


KIND_HEADINGS = {
    "checkpoint": "Checkpoints",
    "lora": "LoRAs",
    "embedding": "Embeddings",
    "vae": "VAEs",
    "upscaler": "Upscalers",
    "controlnet": "ControlNets",
    "ipadapter": "IP-Adapters",
    "clip_vision": "CLIP vision encoders",
    "diffusion_model": "Diffusion models (transformer files)",
    "text_encoder": "Text encoders",
}
ARCH_SHORT = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "sd3": "SD 3.5",
    "flux1": "FLUX.1",
    "flux2": "FLUX.2",
    "zimage": "Z-Image",
    "qwenimage": "Qwen-Image",
}


def _shown_path(path: Path | None, folders: list[Path]) -> str:
    """A path as the owner knows it: below the models (or embeddings) folder when it is."""
    if path is None:
        return ""
    for folder in folders:
        try:
            return path.relative_to(folder).as_posix()
        except ValueError:
            continue
    return str(path)


def _item_facts(item) -> str:  # item: core.library.LibraryItem
    detail = item.detail
    facts = [ARCH_SHORT.get(item.arch or "", "any architecture" if item.kind == "vae" else "")]
    if item.kind == "lora":
        facts.append(str(detail.get("type", "LoRA")))
    elif item.kind == "embedding":
        facts.append(f"{detail.get('vectors', '?')} vector(s)")
    elif item.kind == "upscaler":
        scale = detail.get("scale")
        facts.append(f"{detail.get('family', '?')}" + (f" {scale}x" if scale else ""))
    elif item.kind == "diffusion_model":
        facts = [str(detail.get("title") or ARCH_SHORT.get(item.arch or "", "?"))]
        facts.append(f"{detail.get('format', 'safetensors')}, {detail.get('layout', '?')} layout")
    elif item.kind == "text_encoder":
        facts.append(str(detail.get("role") or detail.get("family") or "?"))
        facts.append(f"width {detail.get('width', '?')}")
    elif item.kind == "vae" and detail.get("latent") not in (None, "sd"):
        facts = ["for " + ", ".join(ARCH_SHORT.get(f, f) for f in detail.get("families") or [])]
    elif item.kind == "controlnet":
        facts.append(
            ("ControlNet-Union" if detail.get("union") else "ControlNet")
            + f", {detail.get('format', '?')} layout"
        )
    elif item.kind == "ipadapter":
        facts.append(f"IP-Adapter {detail.get('variant', '?')}")
        facts.append(f"needs {detail.get('image_encoder') or 'a CLIP vision encoder'}")
    elif item.kind == "clip_vision":
        facts.append(f"{detail.get('encoder') or 'CLIP vision'}, {detail.get('layers', '?')} layers")
    return ", ".join(f for f in facts if f)


def _plans(settings: Settings, registry, memory_mode: str | None) -> dict:
    """Each checkpoint's memory plan on this machine's device (core/planner.py), by path: a
    Plan, or the InputError that says why it cannot fit."""
    from core.devices import resolve_device, resolve_dtype
    from core.planner import plan_here

    plans: dict = {}
    try:
        device = resolve_device(settings.device)
        dtype = resolve_dtype(device, settings.dtype)
    except InputError as err:
        return {info.path: err for info in registry.models}
    for info in registry.models:
        try:
            plans[info.path] = plan_here(info, device, dtype, memory_mode or settings.memory_mode)
        except InputError as err:
            plans[info.path] = err
    return plans


def _plan_json(plan) -> dict:  # plan: core.planner.Plan | InputError
    if isinstance(plan, InputError):
        return {"fits": False, "code": plan.code, "sentence": str(plan)}
    return {"fits": True, **plan.as_json()}


def _plan_text(plan) -> str:
    from core.planner import describe

    if isinstance(plan, InputError):
        return f"plan: does not fit: {plan}"
    return f"plan: {describe(plan)}"


def _listing_json(settings: Settings, registry, plans: dict | None = None) -> dict:
    from core.library import KINDS

    library = registry.library
    folders = [settings.models_path]
    labels = {info.path: info.label for info in registry.models}
    plans = plans or {}
    return {
        "models_dir": str(settings.models_path),
        "embeddings_dirs": [str(p) for p in library.embedding_dirs()],
        "layout": library.layout(),
        "items": {
            kind: [
                {
                    "name": item.name,
                    "arch": item.arch,
                    "path": _shown_path(item.path, folders),
                    **({"label": labels[item.path]} if item.path in labels else {}),
                    **({"plan": _plan_json(plans[item.path])} if item.path in plans else {}),
                    "detail": item.detail,
                }
                for item in library.items(kind)
            ]
            for kind in KINDS
        },
        "refused": [
            {
                "kind": refused.kind,
                "name": refused.name,
                "path": _shown_path(refused.path, folders),
                "reason": refused.reason,
            }
            for refused in library.refused
        ],
        "notes": list(library.notes),
    }


@click.group("models", invoke_without_command=True)
@click.option("--samplers", "show_samplers", is_flag=True, help="List the sampler names instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@click.option(
    "--memory-mode",
    default=None,
    help="Show each checkpoint's plan with this memory mode forced: " + MEMORY_MODE_HELP,
)
@library_folders_option
@click.pass_context
def models(
    ctx: click.Context,
    show_samplers: bool,
    as_json: bool,
    memory_mode: str | None,
    data_dir: Path | None,
    models_dir: Path | None,
    embeddings_dir: Path | None,
) -> None:
    """List every model file: checkpoints, LoRAs, embeddings, VAEs, upscalers, ControlNets,
    IP-Adapters and CLIP vision encoders, and every file refused with the reason. Each
    checkpoint shows its memory plan on this machine's device (the mode and expected peak;
    `--json` has the numbers).

    The models folder may be Obscura's own, or an AUTOMATIC1111/Forge or ComfyUI models/
    folder (only read, never written to). `obscura models convert FILE` turns a pickle
    (.pth/.pt/.ckpt) into a .safetensors file.
    """
    import json

    from core.library import KIND_TITLES, KINDS
    from core.registry import ModelRegistry
    from core.samplers import sampler_names

    if ctx.invoked_subcommand is not None:
        ctx.obj = {"data_dir": data_dir, "models_dir": models_dir}
        return
    if show_samplers:
        for name in sampler_names():
            click.echo(name)
        return
    settings = _settings(data_dir, models_dir, embeddings_dir)
    registry = ModelRegistry(settings.models_path, settings.embeddings_dir)
    library = registry.library
    plans = _plans(settings, registry, memory_mode)
    if as_json:
        click.echo(json.dumps(_listing_json(settings, registry, plans), indent=2, default=str))
        return
    folders = [settings.models_path]
    click.echo(f"Models folder: {settings.models_path}  ({library.layout()} layout)")
    for folder in library.embedding_dirs():
        click.echo(f"Embeddings folder: {folder}")
    if not any(library.items(kind) for kind in KINDS) and not library.refused:
        click.echo("No models yet. Add one (docs/models.md) or run `obscura demo-model`.")
    labels = {info.path: info for info in registry.models}
    for kind in KINDS:
        items = library.items(kind)
        if not items:
            continue
        click.echo(f"{KIND_HEADINGS[kind]} ({len(items)}):")
        for item in items:
            where = _shown_path(item.path, folders)
            if item.path in labels and item.kind == "checkpoint":
                info = labels[item.path]
                click.echo(f"  {info.label}  [{info.format}]  {where}")
                if info.path in plans:
                    click.echo(f"      {_plan_text(plans[info.path])}")
            else:
                click.echo(f"  {item.name}  ({_item_facts(item)})  {where}")
    if library.refused:
        click.echo(f"Refused ({len(library.refused)}):")
    for refused in library.refused:
        where = _shown_path(refused.path, folders) or refused.name
        click.echo(f"  refused: {where} ({KIND_TITLES[refused.kind]}): {refused.reason}")
    for note in library.notes:
        click.echo(f"Note: {note}")


CONVERT_WARNING = (
    "Warning: {name} is a pickle. Opening a pickle can run any code its author put in it.\n"
    "Obscura opens it only with torch.load(weights_only=True), which builds tensors and refuses\n"
    "anything else, in a separate process with no network and no other program. That is a strong\n"
    "guard, not a proof: convert only files from sources you have reason to trust."
)


@models.command("convert")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .safetensors file to write (default: <name>.safetensors in Obscura's own models "
    "folder; never beside the input, nor in an A1111/ComfyUI folder).",
)
@click.option("--yes", is_flag=True, help="Convert without asking after the warning.")
@folders_option
@click.pass_context
def convert(
    ctx: click.Context,
    file: Path,
    out_path: Path | None,
    yes: bool,
    data_dir: Path | None,
    models_dir: Path | None,
) -> None:
    """Convert one pickle (.pth/.pt/.ckpt/.bin: an upscaler, LoRA, embedding, VAE or
    checkpoint) into a .safetensors file Obscura can use.

    The pickle is opened in a separate process with no network, with
    torch.load(weights_only=True) only: a file that would run code is refused, not converted.
    Example:

    \b
      obscura models convert ~/Downloads/4x-UltraSharp.pth
    """
    from core.convert import convert_pickle
    from core.library import KIND_TITLES, is_external_layout

    given = ctx.obj or {}
    settings = _settings(data_dir or given.get("data_dir"), models_dir or given.get("models_dir"))
    own = (
        settings.data_dir / "models"
        if is_external_layout(settings.models_path)
        else settings.models_path
    )
    target = out_path or own / f"{file.stem}.safetensors"
    click.echo(CONVERT_WARNING.format(name=file.name), err=True)
    if not yes:
        click.confirm("Convert it?", abort=True, err=True)
    try:
        done = convert_pickle(file, target)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    kind = KIND_TITLES.get(done.kind or "", "")
    facts = [f"{done.tensors} tensors"]
    if done.unwrapped:
        facts.append(f"taken from its '{done.unwrapped}' entry")
    if done.dropped:
        facts.append(f"{done.dropped} entries that were not tensors left out")
    click.echo(f"Converted: {done.output}  ({kind + ' file, ' if kind else ''}{', '.join(facts)})")
    click.echo(f"Network guard in the converter: {done.network_guard}.")
    if done.kind is None:
        click.echo(
            "Note: Obscura does not recognise the result as a model file it can use "
            "(see docs/models.md)."
        )
    try:
        done.output.resolve().relative_to(settings.models_path.resolve())
    except ValueError:
        click.echo(
            f"To use it, move it into your models folder ({settings.models_path}); "
            "Obscura does not write there itself."
        )
