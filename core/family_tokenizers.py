"""The tokenizers of the transformer families, from local files only (never a hub).

- CLIP-L / CLIP-G (SD 3.5, FLUX.1): core/tokenizer.py builds them from the shipped BPE table.
- T5-XXL (SD 3.5, FLUX.1): Google's SentencePiece vocabulary as a ``tokenizer.json``.
- Qwen2.5 / Qwen3 (FLUX.2 [klein], Z-Image, Qwen-Image): Alibaba's byte-level BPE
  (``vocab.json`` + ``merges.txt``; Qwen3 and Qwen2.5-VL share it).

Where the T5 and Qwen files are looked for, first found wins (the owner's own copies first, so
that a model runs with exactly the tokenizer its other tools use; Obscura's copy last):

1. a ComfyUI install the models folder belongs to: ComfyUI's code carries both at
   ``comfy/text_encoders/t5_tokenizer/`` and ``comfy/text_encoders/qwen25_tokenizer/``
   (``<install>/models`` is the models folder);
2. the matching ``tokenizer*/`` folder of any diffusers folder of the family in the library
   (a FLUX.1 folder's ``tokenizer_2/`` is a T5 tokenizer);
3. ``core/configs/tokenizers/t5`` and ``core/configs/tokenizers/qwen2`` (shipped with Obscura;
   each file may be gzipped: ``tokenizer.json.gz``). The T5 one ships (google/t5-v1_1-xxl's
   vocabulary, Apache-2.0; see core/configs/README.md); the Qwen one does not yet.

None found: :class:`~core.errors.ModelError` ``tokenizer_missing`` names the file to add.
Qwen3's pipelines (FLUX.2 [klein], Z-Image) call ``apply_chat_template(enable_thinking=False)``:
a tokenizer folder without a template gets Qwen3's turn format (``QWEN3_CHAT_TEMPLATE``).
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from core.errors import ModelError

# The kind of tokenizer each family's pipeline components take.
FAMILY_TOKENIZERS: dict[str, dict[str, str]] = {
    "sd3": {"tokenizer": "clip", "tokenizer_2": "clip-g", "tokenizer_3": "t5"},
    "flux1": {"tokenizer": "clip", "tokenizer_2": "t5"},
    "flux2": {"tokenizer": "qwen2"},
    "zimage": {"tokenizer": "qwen2"},
    "qwenimage": {"tokenizer": "qwen2"},
}
COMFY_FOLDERS = {"t5": "t5_tokenizer", "qwen2": "qwen25_tokenizer"}
DIFFUSERS_CLASSES = {"t5": ("T5TokenizerFast", "T5Tokenizer"),
                     "qwen2": ("Qwen2TokenizerFast", "Qwen2Tokenizer")}
MISSING = {
    "t5": "the T5 tokenizer (tokenizer.json)",
    "qwen2": "the Qwen2.5/Qwen3 tokenizer (vocab.json and merges.txt)",
}
# Qwen3's turn format (im_start/im_end; an empty think block when thinking is off).
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% else %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}"
)
_NEEDED = {"t5": ("tokenizer.json",), "qwen2": ("vocab.json", "merges.txt")}


def _has_files(folder: Path, kind: str) -> bool:
    return all((folder / n).is_file() or (folder / (n + ".gz")).is_file() for n in _NEEDED[kind])


def shipped_folder(kind: str) -> Path:
    return Path(str(resources.files("core.configs").joinpath("tokenizers", kind)))


def candidate_folders(kind: str, models_dir: Path | None, diffusers_folders: list[Path]) -> list[Path]:
    """Where a tokenizer of ``kind`` is looked for, in order (see the module docstring)."""
    out: list[Path] = []
    if models_dir is not None:
        install = Path(models_dir).parent
        out.append(install / "comfy" / "text_encoders" / COMFY_FOLDERS[kind])
    for folder in diffusers_folders:
        try:
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for component, spec in index.items() if isinstance(index, dict) else ():
            if (component.startswith("tokenizer") and isinstance(spec, list) and len(spec) == 2
                    and spec[1] in DIFFUSERS_CLASSES[kind]):
                out.append(folder / component)
    out.append(shipped_folder(kind))
    return out


def find_tokenizer_folder(kind: str, models_dir: Path | None = None,
                          diffusers_folders: list[Path] | None = None) -> Path:
    for folder in candidate_folders(kind, models_dir, diffusers_folders or []):
        if folder.is_dir() and _has_files(folder, kind):
            return folder
    raise ModelError(
        "tokenizer_missing",
        f"This model needs {MISSING[kind]}, which this Obscura install lacks; put a ComfyUI "
        "install's comfy/text_encoders tokenizer folder beside the models folder, or use the "
        "model's diffusers folder (see docs/models.md).",
    )


def _unpacked(folder: Path, tmp: Path) -> Path:
    """The folder with any ``*.gz`` file unpacked (into ``tmp``); the folder itself otherwise."""
    if not any(p.suffix == ".gz" for p in folder.iterdir()):
        return folder
    for path in folder.iterdir():
        if not path.is_file():
            continue
        if path.suffix == ".gz":
            (tmp / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
        else:
            shutil.copyfile(path, tmp / path.name)
    return tmp


def load_tokenizer(kind: str, models_dir: Path | None = None,
                   diffusers_folders: list[Path] | None = None) -> Any:
    """A T5 (``"t5"``), Qwen (``"qwen2"``) or CLIP (``"clip"``, ``"clip-g"``) tokenizer, offline."""
    if kind in ("clip", "clip-g"):
        from core.tokenizer import clip_tokenizer

        return clip_tokenizer("!" if kind == "clip-g" else "<|endoftext|>")
    folder = find_tokenizer_folder(kind, models_dir, diffusers_folders)
    with tempfile.TemporaryDirectory() as tmp:
        source = _unpacked(folder, Path(tmp))
        if kind == "t5":
            from transformers import T5TokenizerFast  # type: ignore[attr-defined]

            return T5TokenizerFast.from_pretrained(str(source), local_files_only=True)
        from transformers import Qwen2TokenizerFast  # type: ignore[attr-defined]

        tokenizer = Qwen2TokenizerFast.from_pretrained(str(source), local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def family_tokenizers(arch: str, models_dir: Path | None = None,
                      diffusers_folders: list[Path] | None = None) -> dict[str, Any]:
    """Every tokenizer component of a family's pipeline ("tokenizer", "tokenizer_2", ...)."""
    return {
        component: load_tokenizer(kind, models_dir, diffusers_folders)
        for component, kind in FAMILY_TOKENIZERS.get(arch, {}).items()
    }
