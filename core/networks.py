"""LoRAs, embeddings and VAEs for one job, and never for the next.

A prompt names its LoRAs the AUTOMATIC1111 way, ``<lora:name:0.8>`` (``<lyco:...>`` is the same
tag): the tags are found by :func:`core.prompts.extract_extra_networks`, the one parser, and the
encoder never sees them. A1111's forms are all read:

* ``<lora:name>`` weight 1; ``<lora:name:0.8>`` both parts 0.8; ``<lora:name:te:unet>`` the text
  encoder and the UNet apart; ``<lora:name:unet=0.5:te=1>`` by name (``dyn=`` is read and ignored:
  diffusers has no dynamic rank). Negative weights and weights above 1 work; every weight is
  bounded by :data:`MAX_LORA_WEIGHT`, and one prompt uses at most :data:`MAX_LORAS` LoRAs.
* Tags of the positive prompt only are applied, as in A1111 (a tag in the negative prompt is
  removed from its text and does nothing).

How a job gets them (:meth:`NetworkSet.applied`, one ``with`` around everything the job runs, the
hires fix's second pass included):

* LoRAs go through diffusers' ``load_lora_weights`` (peft) into the model's shared UNet and text
  encoders under an opaque adapter id (never the file's name), then ``set_adapters`` with the
  job's weights. When the job ends, however it ends, ``disable_lora`` turns every adapter off:
  peft's layers then compute exactly the base layer, so a job without a LoRA gives the very
  pixels of a fresh server (tests/core/test_networks.py checks it with ``torch.equal``). Adapters
  are not fused: unfusing does not give back the same bits.
* Loaded adapters are kept for the next jobs (a file is read once); beyond :data:`LORA_CACHE`
  (plus the current job's) the least recently used ones are deleted (``delete_adapters``).
* A VAE (``GenerationRequest.vae``, A1111's ``sd_vae``; ``None``/"Automatic"/"None" = the model's
  own) is built once with ``AutoencoderKL.from_single_file`` from a local config
  (:func:`core.pipelines.load_vae`), kept in a cache of :data:`VAE_CACHE`, set as ``pipe.vae``
  for the job and replaced by the model's own on every pipeline afterwards.
* Textual-inversion embeddings named in the prompts (any case, whole words, as in A1111) are added
  to the tokenizer and text encoder(s) with ``load_textual_inversion`` for the job and removed
  afterwards, the model's own token table put back (:meth:`NetworkSet.use_embeddings`); the
  engine hands the prompts to the encoder through :meth:`NetworkSet.text`.
* A LoRA or VAE that cannot be used (unknown name, another architecture, a LyCORIS type diffusers
  cannot load, a damaged file) is one sentence that names it and says why. With
  ``allow_missing_networks`` an unusable LoRA is skipped instead and the result's
  ``extras["skipped_networks"]`` lists it, so the person is told; never silently.

Privacy: LoRA, embedding and VAE names are the user's (they are written in prompts). A sentence that names
one goes only to the person who asked, as the job's error; nothing here logs anything but error
codes and counts.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from core.errors import InputError, ModelError
from core.prompts import extract_extra_networks
from core.registry import ARCH_TITLES, ModelInfo

if TYPE_CHECKING:
    from core.devices import DevicePlan

log = logging.getLogger("obscura.core")

# peft's notes on what this module does on purpose (several adapters on one model; a deleted
# adapter that was active) are not for the owner's console.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", module="peft")
warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted", module="peft")

MAX_LORAS = 8  # distinct LoRAs one prompt may use
MAX_LORA_WEIGHT = 10.0  # either sign; A1111 has no bound, typical weights are -2..2
LORA_CACHE = 8  # adapters kept loaded per model, besides the current job's
VAE_CACHE = 2  # VAEs kept loaded per model
MAX_EMBEDDINGS = 16  # embeddings one job's prompts may use
MAX_NAME_CHARS = 255
LORA_TAGS = ("lora", "lyco")  # A1111 reads <lyco:...> as <lora:...>
AUTOMATIC_VAE = ("automatic", "none", "")  # A1111's sd_vae values for "the model's own"

_XL_NAME = re.compile(r"(?:^|[^a-z0-9])(?:sdxl|xl)(?:[^a-z0-9]|$)", re.I)
# Keys of one LoRA pair's "down" (A) matrix, in every layout diffusers reads.
_DOWN_SUFFIXES = (
    ".lora_down.weight",
    ".lora.down.weight",
    "_lora.down.weight",
    ".lora_A.weight",
    ".lora_linear_layer.down.weight",
)


class Library(Protocol):
    """What this module needs of :class:`core.library.ModelLibrary`."""

    def find(self, kind: str, name: str) -> Any: ...


def _title(arch: str | None) -> str:
    return ARCH_TITLES.get(arch or "", "another kind of model")


# -- what the prompt asks for -----------------------------------------------------------------
@dataclass(frozen=True)
class LoraUse:
    """One LoRA of a prompt with its text-encoder and UNet weights (``repr`` hides the name)."""

    name: str = field(repr=False)
    te: float = 1.0
    unet: float = 1.0

    @property
    def is_noop(self) -> bool:
        return self.te == 0.0 and self.unet == 0.0


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            "lora_bad_weight",
            "A LoRA weight in the prompt is not a number; write it like <lora:name:0.8>.",
        ) from None
    if not math.isfinite(value) or abs(value) > MAX_LORA_WEIGHT:
        raise InputError(
            "lora_weight_out_of_range",
            "LoRA weights must be between -{max} and {max}.",
            max=MAX_LORA_WEIGHT,
        )
    return value


def lora_uses(prompt: str) -> list[LoraUse]:
    """The LoRAs a prompt names, in order, read exactly as A1111's ``ExtraNetworkLora``.

    The same LoRA named twice is applied once with the weights added (what applying it twice
    does to the weights).
    """
    _, tags = extract_extra_networks(prompt)
    found: dict[str, LoraUse] = {}
    for tag in tags:
        if tag.kind not in LORA_TAGS:
            continue
        positional, named = tag.positional, tag.named
        name = positional[0] if positional else ""
        te = _weight(positional[1]) if len(positional) > 1 else 1.0
        te = _weight(named["te"]) if "te" in named else te
        unet = _weight(positional[2]) if len(positional) > 2 else te
        unet = _weight(named["unet"]) if "unet" in named else unet
        if not name or len(name) > MAX_NAME_CHARS:
            raise InputError(
                "lora_bad_tag", "A LoRA tag in the prompt has no name; write it like <lora:name:0.8>."
            )
        if name in found:
            before = found[name]
            te, unet = before.te + te, before.unet + unet
            if max(abs(te), abs(unet)) > MAX_LORA_WEIGHT:
                _weight(str(max(abs(te), abs(unet))))  # the same sentence as a single weight
        elif len(found) >= MAX_LORAS:
            raise InputError(
                "too_many_loras", "A prompt can use at most {max} LoRAs.", max=MAX_LORAS
            )
        found[name] = LoraUse(name, te, unet)
    return list(found.values())


def vae_name(value: Any) -> str | None:
    """The library name of the VAE a request asks for; None for the model's own."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise InputError("bad_vae", "The VAE must be named by text (or Automatic).")
    if value.strip().lower() in AUTOMATIC_VAE:
        return None
    # A1111 lists VAEs by file name; the library by stem. Both are accepted.
    for suffix in (".safetensors", ".sft"):
        if value.lower().endswith(suffix):
            return value[: -len(suffix)]
    return value


# -- the sentences ----------------------------------------------------------------------------
def _lora_error(code: str, name: str, reason: str = "") -> InputError:
    if code == "lora_not_found":
        return InputError(
            "lora_not_found",
            "There is no LoRA named “{name}” in the model library; check its name in the LoRA list.",
            name=name,
        )
    if code == "lora_unusable":
        return InputError(
            "lora_unusable", "The LoRA “{name}” cannot be used: {reason}", name=name, reason=reason
        )
    if code == "lora_damaged":
        return InputError(
            "lora_damaged",
            "The LoRA “{name}” could not be read: the file is damaged or is not a LoRA; download "
            "it again.",
            name=name,
        )
    return InputError(
        "lora_mismatch",
        "The LoRA “{name}” does not fit this model: its layers are not this model's (it is "
        "probably for another architecture).",
        name=name,
    )


def _vae_error(code: str, name: str, reason: str = "") -> InputError:
    if code == "vae_not_found":
        return InputError(
            "vae_not_found",
            "There is no VAE named “{name}” in the model library; choose one from the VAE list or "
            "Automatic.",
            name=name,
        )
    if code == "vae_unusable":
        return InputError(
            "vae_unusable", "The VAE “{name}” cannot be used: {reason}", name=name, reason=reason
        )
    if code == "vae_damaged":
        return InputError(
            "vae_damaged",
            "The VAE “{name}” could not be read: the file is damaged or is not a VAE; download it "
            "again.",
            name=name,
        )
    return InputError(
        "vae_mismatch",
        "The VAE “{name}” does not fit this model (its layers have other shapes); choose "
        "Automatic or another VAE.",
        name=name,
    )


def _embedding_error(code: str, name: str) -> InputError:
    if code == "embedding_damaged":
        return InputError(
            "embedding_damaged",
            "The embedding “{name}” could not be read: the file is damaged or is not an "
            "embedding; download it again.",
            name=name,
        )
    return InputError(
        "embedding_mismatch",
        "The embedding “{name}” does not fit this model (its vectors have another width, or "
        "its name is already a word of the model's vocabulary).",
        name=name,
    )


def _wrong_arch(kind: str, name: str, arch: str | None, model_arch: str) -> InputError:
    if kind == "vae":
        return InputError(
            "vae_wrong_arch",
            "The VAE “{name}” is made for {arch} and this model is {model_arch}; choose Automatic "
            "or a VAE made for {model_arch}.",
            name=name,
            arch=_title(arch),
            model_arch=_title(model_arch),
        )
    return InputError(
        "lora_wrong_arch",
        "The LoRA “{name}” is made for {arch} and this model is {model_arch}; use a LoRA made for "
        "{model_arch}.",
        name=name,
        arch=_title(arch),
        model_arch=_title(model_arch),
    )


def _family(arch: str | None) -> str | None:
    """SD 1.x and 2.x share one VAE shape and latent scale; SDXL has its own; each transformer
    family (sd3, flux1, ...: core/library.py tags their VAEs) its own."""
    if arch is None:
        return None
    if arch in ("sd1", "sd2"):
        return "sd"
    return arch


def vae_arch(item: Any) -> str | None:
    """The architecture a VAE is for: SD 1.x/2.x and SDXL VAEs have the same shapes, so this
    comes from the library, the file's metadata, or a name that says SDXL/XL (else unknown)."""
    if getattr(item, "arch", None):
        return str(item.arch)
    detail = getattr(item, "detail", None) or {}
    spec = str(detail.get("architecture", "")).lower()
    if "xl" in spec:
        return "sdxl"
    if _XL_NAME.search(str(getattr(item, "name", ""))):
        return "sdxl"
    return None


def _find_lora(library: Library | None, use: LoraUse, info: ModelInfo) -> Any:
    if library is None:
        raise _lora_error("lora_not_found", use.name)
    try:
        item = library.find("lora", use.name)
    except InputError as err:
        if err.code == "lora_refused":
            raise _lora_error("lora_unusable", use.name, str(err.params.get("reason", ""))) from None
        raise _lora_error("lora_not_found", use.name) from None
    detail = getattr(item, "detail", None) or {}
    if item.arch and info.arch and item.arch != info.arch:
        raise _wrong_arch("lora", use.name, item.arch, info.arch)
    if detail.get("dora"):
        raise _lora_error(
            "lora_unusable",
            use.name,
            "it is a DoRA file, which diffusers cannot load for this model; use a plain LoRA.",
        )
    if detail.get("tucker"):
        raise _lora_error(
            "lora_unusable",
            use.name,
            "it is a LyCORIS LoCon with CP/Tucker decomposition (lora_mid), which diffusers cannot "
            "load; use a plain LoRA or LoCon.",
        )
    return item


def _find_vae(library: Library | None, name: str, info: ModelInfo) -> Any:
    if library is None:
        raise _vae_error("vae_not_found", name)
    try:
        item = library.find("vae", name)
    except InputError as err:
        if err.code == "vae_refused":
            raise _vae_error("vae_unusable", name, str(err.params.get("reason", ""))) from None
        raise _vae_error("vae_not_found", name) from None
    arch = vae_arch(item)
    if _family(arch) and _family(info.arch) and _family(arch) != _family(info.arch):
        raise _wrong_arch("vae", name, arch, info.arch)
    return item


def check_request(request: Any, library: Library | None, info: ModelInfo) -> None:
    """Everything about a request's LoRAs and VAE that can be known without reading a file
    (used by ``Engine.validate``, so a mistake is told before the job waits in line)."""
    if not isinstance(request.allow_missing_networks, bool):
        raise InputError(
            "bad_allow_missing_networks", "allow_missing_networks must be true or false."
        )
    prompts = [request.prompt]
    hires = getattr(request, "hires", None)
    if hires is not None and isinstance(getattr(hires, "prompt", None), str):
        prompts.append(hires.prompt)
    for prompt in prompts:
        for use in lora_uses(prompt):
            if use.is_noop:
                continue
            try:
                _find_lora(library, use, info)
            except InputError:
                if not request.allow_missing_networks:
                    raise
    name = vae_name(request.vae)
    if name is not None:
        _find_vae(library, name, info)


# -- reading files ----------------------------------------------------------------------------
def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file on the CPU (never a pickle: safetensors only)."""
    from safetensors.torch import load_file

    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise ValueError("not a safetensors file")
    return load_file(str(path), device="cpu")


def _lora_pairs(state: dict[str, torch.Tensor]) -> int:
    return sum(1 for key in state if key.endswith(_DOWN_SUFFIXES))


# -- per model --------------------------------------------------------------------------------
@dataclass
class _Adapter:
    id: str
    components: frozenset[str]


@dataclass
class Applied:
    """What a job got: ``extras()`` goes into ``GenerationResult.extras``."""

    loras: int = 0
    vae: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)

    def extras(self) -> dict[str, Any]:
        if not self.skipped:
            return {}
        # For the person who asked (the API/UI tells them); never logged.
        return {"skipped_networks": [dict(s) for s in self.skipped]}


class NetworkSet:
    """The LoRA adapters, VAEs and (per job) embeddings of one loaded model (the engine makes
    one per load).

    Not thread-safe by itself: the engine calls it under its job lock.
    """

    def __init__(
        self,
        info: ModelInfo,
        base: Any,
        library: Library | None,
        plan: DevicePlan | None = None,
        lora_cache: int = LORA_CACHE,
        vae_cache: int = VAE_CACHE,
    ) -> None:
        self.info = info
        self.base = base
        self.library = library
        self.plan = plan
        self.lora_cache = max(0, int(lora_cache))
        self.vae_cache = max(0, int(vae_cache))
        self.own_vae = base.vae
        self.broken = False  # set when a job's tear-down failed: the engine reloads the model
        self._adapters: OrderedDict[tuple[str, int, int], _Adapter] = OrderedDict()
        self._vaes: OrderedDict[tuple[str, int, int], Any] = OrderedDict()
        self._counter = 0
        self._job: Applied | None = None
        # (tokenizer, text encoder, tokens) of this job's embeddings, removed when it ends.
        self._tokens: list[tuple[Any, Any, list[str], tuple[Any, Any, int]]] = []
        self._words: list[str] = []  # their names, lower case
        self._job_vae: Any = None
        self.loads = 0  # files read (LoRAs and VAEs), for tests and the benchmark

    # -- the job --------------------------------------------------------------------------
    @contextmanager
    def applied(self, pipes: dict[str, Any], request: Any) -> Iterator[Applied]:
        """Set the request's LoRAs and VAE on the model for the ``with`` block, then take them
        off every pipeline in ``pipes`` (the engine's live dict, so pipelines derived during the
        job are restored too), however the block ends."""
        used = Applied()
        self._job = used
        try:
            self.use_loras(request.prompt, bool(request.allow_missing_networks), used)
            self.use_embeddings(_prompt_texts(request), bool(request.allow_missing_networks), used)
            name = vae_name(request.vae)
            if name is not None:
                self._job_vae = self._vae(name)
                for pipe in list(pipes.values()):
                    self._set_vae(pipe, self._job_vae)
                used.vae = True
            yield used
        finally:
            self._job = None
            self._job_vae = None
            self._reset(pipes)

    def attach(self, pipe: Any) -> None:
        """Give a pipeline taken during the job (the hires fix's img2img one) the job's VAE."""
        if self._job_vae is not None:
            self._set_vae(pipe, self._job_vae)

    def use_prompt(self, prompt: str, allow_missing: bool) -> None:
        """During a job: switch to the LoRAs of another prompt (A1111's hires fix prompt)."""
        if self._job is None:
            raise RuntimeError("use_prompt outside a job")
        self.use_loras(prompt, allow_missing, self._job)

    def use_loras(self, prompt: str, allow_missing: bool, used: Applied) -> None:
        """Make exactly the LoRAs of ``prompt`` active (none: all off). Inside :meth:`applied`
        this may be called again, e.g. for a hires fix prompt that names other LoRAs."""
        uses = [use for use in lora_uses(prompt) if not use.is_noop]
        chosen: list[tuple[_Adapter, LoraUse]] = []
        keep: set[str] = set()
        for use in uses:
            try:
                adapter = self._adapter(use, keep)
            except InputError as err:
                if not allow_missing:
                    raise
                log.info("network skipped: %s", err.code)
                skipped = {"kind": "lora", "name": use.name, "code": err.code, "message": str(err)}
                if skipped not in used.skipped:
                    used.skipped.append(skipped)
                continue
            keep.add(adapter.id)
            chosen.append((adapter, use))
        if not chosen:
            self._lora_off()
            used.loras = 0
            return
        weights = []
        for adapter, use in chosen:
            parts = {"unet": use.unet, "text_encoder": use.te, "text_encoder_2": use.te}
            weights.append({k: v for k, v in parts.items() if k in adapter.components})
        self.base.enable_lora()
        self.base.set_adapters([adapter.id for adapter, _ in chosen], weights)
        used.loras = len(chosen)

    # -- LoRAs ----------------------------------------------------------------------------
    def _adapter(self, use: LoraUse, keep: set[str]) -> _Adapter:
        item = _find_lora(self.library, use, self.info)
        try:
            key = _file_key(Path(item.path))
        except OSError:
            raise _lora_error("lora_damaged", use.name) from None
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return self._adapters[key]
        try:
            state = read_weights(Path(item.path))
        except Exception:  # safetensors' errors, a file gone: all mean "cannot read it"
            log.info("lora refused: lora_damaged")
            raise _lora_error("lora_damaged", use.name) from None
        pairs = _lora_pairs(state)
        if pairs == 0:
            raise _lora_error("lora_damaged", use.name)
        self._counter += 1
        adapter_id = f"obscura_lora_{self._counter}"  # never the file's name
        self.loads += 1
        try:
            self.base.load_lora_weights(state, adapter_name=adapter_id)
        except (MemoryError, torch.OutOfMemoryError):
            self._delete(adapter_id)
            raise
        except Exception as exc:  # size mismatches, unknown layer names: "does not fit"
            self._delete(adapter_id)
            log.info("lora refused: lora_mismatch (%s)", type(exc).__name__)
            raise _lora_error("lora_mismatch", use.name) from None
        finally:
            del state
        layers = self._layers(adapter_id)
        if sum(layers.values()) < pairs:  # some of its layers are not this model's
            self._delete(adapter_id)
            log.info("lora refused: lora_mismatch (partial)")
            raise _lora_error("lora_mismatch", use.name)
        adapter = _Adapter(adapter_id, frozenset(c for c, n in layers.items() if n))
        self._adapters[key] = adapter
        self._evict(keep | {adapter_id})
        return adapter

    def _components(self) -> list[tuple[str, Any]]:
        names = getattr(self.base, "_lora_loadable_modules", ["unet", "text_encoder"])
        return [(n, getattr(self.base, n, None)) for n in names if getattr(self.base, n, None) is not None]

    def _layers(self, adapter_id: str) -> dict[str, int]:
        """How many layers of each component carry ``adapter_id``."""
        counts: dict[str, int] = {}
        for name, model in self._components():
            count = 0
            for module in model.modules():
                for attr in ("lora_A", "lora_embedding_A"):
                    table = getattr(module, attr, None)
                    if isinstance(table, (torch.nn.ModuleDict, torch.nn.ParameterDict, dict)) and adapter_id in table:
                        count += 1
                        break
            counts[name] = count
        return counts

    def _has_adapters(self) -> bool:
        return any(hasattr(model, "peft_config") and model.peft_config for _, model in self._components())

    def _delete(self, adapter_id: str) -> None:
        try:
            listed = self.base.get_list_adapters()
            if any(adapter_id in names for names in listed.values()):
                self.base.delete_adapters(adapter_id)
        except Exception as exc:  # a half-made adapter that cannot be removed: reload the model
            log.warning("lora clean-up failed: %s", type(exc).__name__)
            self.broken = True

    def _evict(self, keep: set[str]) -> None:
        while len(self._adapters) > self.lora_cache:
            victim = next((k for k, a in self._adapters.items() if a.id not in keep), None)
            if victim is None:
                return
            adapter = self._adapters.pop(victim)
            self._delete(adapter.id)

    def _lora_off(self) -> None:
        if self._has_adapters():
            self.base.disable_lora()

    @property
    def cached_loras(self) -> int:
        return len(self._adapters)

    # -- embeddings -----------------------------------------------------------------------
    def use_embeddings(self, texts: list[str], allow_missing: bool, used: Applied) -> None:
        """Load, for this job only, the library's embeddings whose names the prompts use.

        As in A1111 an embedding is used by writing its name (any case) in the prompt or the
        negative prompt. diffusers' ``load_textual_inversion`` adds its tokens to the shared
        tokenizer and text encoder; they are removed again when the job ends, so a word that is
        an embedding's name means that embedding in every job alike, and nothing of one job's
        embeddings is left for the next. An embedding for another architecture is not loaded
        (its name stays text, as in A1111) and is listed in ``skipped_networks``.
        """
        if self.library is None or not hasattr(self.library, "items"):
            return
        texts = [t for t in texts if t]
        if not texts:
            return
        joined = "\n".join(texts).lower()  # a cheap first look, once per job
        taken: set[str] = set()
        for item in self.library.items("embedding"):
            word = str(item.name).lower()
            if not word or word in taken or word not in joined:
                continue
            if not any(_has_word(t, word) for t in texts):
                continue
            taken.add(word)
            if len(taken) > MAX_EMBEDDINGS:
                raise InputError(
                    "too_many_embeddings",
                    "The prompts can use at most {max} embeddings.",
                    max=MAX_EMBEDDINGS,
                )
            if item.arch and self.info.arch and item.arch != self.info.arch:
                note = InputError(
                    "embedding_wrong_arch",
                    "The embedding “{name}” is made for {arch}, so its name was read as text.",
                    name=str(item.name),
                    arch=_title(item.arch),
                )
                used.skipped.append({
                    "kind": "embedding", "name": str(item.name), "code": note.code,
                    "message": str(note), "arch": _title(item.arch),
                })
                continue
            try:
                self._load_embedding(item, word)
            except InputError as err:
                if not allow_missing:
                    raise
                log.info("network skipped: %s", err.code)
                used.skipped.append(
                    {"kind": "embedding", "name": str(item.name), "code": err.code,
                     "message": str(err)}
                )

    def text(self, prompt: str) -> str:
        """``prompt`` with this job's embedding names written in lower case, as the tokenizer
        holds them (CLIP reads text in lower case anyway; diffusers' multi-vector expansion
        matches case), so ``EasyNegative`` and ``easynegative`` are one embedding, as in A1111.
        Nothing else of the prompt changes."""
        for word in self._words:
            prompt = _lower_word(prompt, word)
        return prompt

    def _encoder_pairs(self) -> list[tuple[Any, Any]]:
        pairs = [(getattr(self.base, "tokenizer", None), getattr(self.base, "text_encoder", None)),
                 (getattr(self.base, "tokenizer_2", None), getattr(self.base, "text_encoder_2", None))]
        return [(t, e) for t, e in pairs if t is not None and e is not None]

    def _load_embedding(self, item: Any, word: str) -> None:
        name = str(item.name)
        try:
            state = read_weights(Path(item.path))
        except Exception:
            log.info("embedding refused: embedding_damaged")
            raise _embedding_error("embedding_damaged", name) from None
        pairs = self._encoder_pairs()
        if len(pairs) == 2:  # SDXL: one set of vectors per encoder
            vectors = [state.get("clip_l"), state.get("clip_g")]
        else:
            keys = [k for k in state if k == "emb_params" or k.startswith("string_to_param")]
            if not keys and len(state) == 1:
                keys = list(state)
            vectors = [state[keys[0]] if keys else None]
        if any(v is None or v.dim() not in (1, 2) or v.numel() == 0 for v in vectors):
            raise _embedding_error("embedding_mismatch", name)
        for (tokenizer, encoder), tensor in zip(pairs, vectors, strict=True):
            assert tensor is not None
            tensor = tensor.reshape(-1, tensor.shape[-1]) if tensor.dim() == 2 else tensor[None]
            tokens = [word] + [f"{word}_{i}" for i in range(1, tensor.shape[0])]
            width = encoder.get_input_embeddings().weight.shape[-1]
            if tensor.shape[-1] != width or any(t in tokenizer.get_vocab() for t in tokens):
                raise _embedding_error("embedding_mismatch", name)
            # The model's own token table, put back as it was (the same tensor) afterwards.
            table = encoder.get_input_embeddings()
            own = (table, table.weight.data, encoder.config.vocab_size)
            try:
                self.base.load_textual_inversion(
                    tensor, token=word, tokenizer=tokenizer, text_encoder=encoder
                )
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as exc:
                log.info("embedding refused: embedding_mismatch (%s)", type(exc).__name__)
                self._restore_table(tokenizer, encoder, tokens, own)
                raise _embedding_error("embedding_mismatch", name) from None
            self._tokens.append((tokenizer, encoder, tokens, own))
        self._words.append(word)

    def _embeddings_off(self) -> None:
        self._words = []
        while self._tokens:
            self._restore_table(*self._tokens.pop())

    def _restore_table(
        self, tokenizer: Any, encoder: Any, tokens: list[str], own: tuple[Any, Any, int]
    ) -> None:
        if any(t in tokenizer.get_vocab() for t in tokens):
            self.base.unload_textual_inversion(tokens, tokenizer=tokenizer, text_encoder=encoder)
        table, data, vocab_size = own
        # transformers resizes the table in place (a new tensor under the same parameter): the
        # model's own tensor goes back, untouched.
        table.weight.data = data
        table.num_embeddings = data.shape[0]
        encoder.set_input_embeddings(table)
        encoder.config.vocab_size = vocab_size

    # -- VAEs -----------------------------------------------------------------------------
    def _vae(self, name: str) -> Any:
        item = _find_vae(self.library, name, self.info)
        try:
            key = _file_key(Path(item.path))
        except OSError:
            raise _vae_error("vae_damaged", name) from None
        if key in self._vaes:
            self._vaes.move_to_end(key)
            return self._vaes[key]
        from core import pipelines

        try:
            state = read_weights(Path(item.path))
        except Exception:
            log.info("vae refused: vae_damaged")
            raise _vae_error("vae_damaged", name) from None
        prefix = str((getattr(item, "detail", None) or {}).get("prefix", ""))
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        self.loads += 1
        try:
            vae = pipelines.load_vae(self.info, state, self.own_vae.dtype)
        except (MemoryError, torch.OutOfMemoryError):
            raise
        except ModelError as err:
            log.info("vae refused: %s", err.code)
            raise _vae_error("vae_mismatch", name) from None
        except Exception as exc:
            log.info("vae refused: vae_mismatch (%s)", type(exc).__name__)
            raise _vae_error("vae_mismatch", name) from None
        finally:
            del state
        if self.plan is None or self.plan.memory_mode == "none":
            vae.to(self.own_vae.device)
        if self.plan is not None and self.plan.vae_tiling:
            vae.enable_tiling()
        self._vaes[key] = vae
        while len(self._vaes) > self.vae_cache:
            self._vaes.popitem(last=False)
        return vae

    def _set_vae(self, pipe: Any, vae: Any) -> None:
        if getattr(pipe, "vae", None) is vae:
            return
        offloaded = self.plan is not None and self.plan.memory_mode != "none"
        if offloaded:
            _remove_hooks(pipe.vae)
        pipe.vae = vae
        if offloaded:
            from core import pipelines

            assert self.plan is not None
            pipelines.place(pipe, self.plan)

    # -- after the job ----------------------------------------------------------------------
    def _reset(self, pipes: dict[str, Any]) -> None:
        try:
            self._embeddings_off()
        except Exception as exc:
            log.error("embedding tear-down failed: %s", type(exc).__name__)
            self.broken = True
        try:
            self._lora_off()
            for pipe in list(pipes.values()):
                self._set_vae(pipe, self.own_vae)
        except Exception as exc:  # the model may still carry this job's networks: reload it
            log.error("network tear-down failed: %s", type(exc).__name__)
            self.broken = True


def _remove_hooks(module: Any) -> None:
    if module is not None and hasattr(module, "_hf_hook"):
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(module, recurse=True)


def _prompt_texts(request: Any) -> list[str]:
    texts = [request.prompt, request.negative_prompt]
    hires = getattr(request, "hires", None)
    for name in ("prompt", "negative_prompt"):
        value = getattr(hires, name, None) if hires is not None else None
        if isinstance(value, str):
            texts.append(value)
    return [t for t in texts if isinstance(t, str)]


def _word_starts(text: str, word: str) -> list[int]:
    """Where ``word`` (lower case) stands in ``text`` (any case), not inside a longer word."""
    lowered, found = text.lower(), []
    if len(lowered) != len(text):  # a character whose lower case is longer: compare as is
        lowered = text
    start = lowered.find(word)
    while start != -1:
        end = start + len(word)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            found.append(start)
        start = lowered.find(word, start + 1)
    return found


def _has_word(text: str, word: str) -> bool:
    return bool(_word_starts(text, word))


def _lower_word(text: str, word: str) -> str:
    for start in reversed(_word_starts(text, word)):
        text = text[:start] + word + text[start + len(word):]
    return text
