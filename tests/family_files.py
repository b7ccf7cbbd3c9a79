"""Tiny random-weight models of every transformer family, saved the ways people have them.

Built in code from diffusers' own fast-test configs (tests/pipelines/{stable_diffusion_3,flux,
flux2,z_image,qwenimage}/test_*.py ``get_dummy_components``), with two changes so that the files
look like the real ones where Obscura reads them: the **latent channels** are the real ones (16,
FLUX.2: 32) and each VAE has four levels (scale factor 8). Text encoders are tiny (widths 16-48),
so they are told apart by structure and by the widths the transformer takes, as in the real files.
Tokenizers are built in code (no hub): a CLIP one like core/demo.py's, a tiny T5 (Unigram) and a
tiny Qwen BPE (byte-level, no merges) with Qwen's special tokens and a minimal chat template.

``save_family(path, arch, variant, fmt)`` writes:

- ``"diffusers"``: a diffusers folder at ``path`` (``model_index.json`` + components);
- ``"parts"``: a ComfyUI ``models/`` folder at ``path``: ``diffusion_models/<name>.safetensors``
  (the transformer's state dict), ``text_encoders/<encoder>.safetensors`` (transformers' key
  layout, as ComfyUI's files are) and ``vae/<vae>.safetensors``;
- ``"single-file"``: like "parts", but the transformer is in ``checkpoints/`` with the
  ``model.diffusion_model.`` prefix (ComfyUI's saved-checkpoint layout) and its text encoders
  (``text_encoders.<name>.transformer.``) and VAE (``vae.``) in the same file;
- ``"gguf"``: like "parts", but the transformer is ``diffusion_models/<name>.gguf`` written with
  the gguf package's GGUFWriter (F32 tensors, the state dict's names, ``general.architecture``).

Each build takes well under 2 s and writes under 5 MB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILY_VARIANTS: dict[str, tuple[str, ...]] = {
    "sd3": ("medium", "large", "large-turbo"),
    "flux1": ("schnell", "dev", "fill", "kontext"),
    "flux2": ("klein", "klein-base"),
    "zimage": ("turbo", "base"),
    "qwenimage": ("base", "edit", "edit-plus"),
}
DEFAULT_VARIANT = {"sd3": "medium", "flux1": "schnell", "flux2": "klein", "zimage": "turbo",
                   "qwenimage": "base"}

# File names as the families' ComfyUI pages name them (the names Obscura's pairing reads).
PART_NAMES: dict[str, dict[str, str]] = {
    "sd3": {"transformer": "sd3.5_{variant}", "text_encoder": "clip_l",
            "text_encoder_2": "clip_g", "text_encoder_3": "t5xxl_fp16", "vae": "sd3_vae"},
    "flux1": {"transformer": "flux1-{variant}", "text_encoder": "clip_l",
              "text_encoder_2": "t5xxl_fp16", "vae": "ae"},
    "flux2": {"transformer": "flux-2-{variant}-4b", "text_encoder": "qwen_3_4b",
              "vae": "flux2-vae"},
    "zimage": {"transformer": "z_image_{variant}", "text_encoder": "qwen_3_4b", "vae": "ae"},
    "qwenimage": {"transformer": "qwen_image_{variant}", "text_encoder": "qwen_2.5_vl_7b",
                  "vae": "qwen_image_vae"},
}
GGUF_ARCH = {"sd3": "sd3", "flux1": "flux", "flux2": "flux2", "zimage": "lumina2",
             "qwenimage": "qwen_image"}

QWEN_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
)
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


# -- tokenizers -------------------------------------------------------------------------------
def clip_tokenizer() -> Any:
    import tempfile

    from core.demo import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return build_tokenizer(Path(tmp) / "tokenizer")


def t5_tokenizer() -> Any:
    """A tiny T5 tokenizer (SentencePiece-style Unigram: pad 0, eos 1, unk 2, like T5's)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import T5TokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(c, -2.0) for c in letters] + [("\u2581" + c, -1.5) for c in letters]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_ids=0, model_max_length=512,
    )


def qwen_tokenizer() -> Any:
    """A tiny Qwen2 tokenizer: byte-level BPE with no merges, Qwen's special tokens."""
    from transformers import Qwen2Tokenizer

    from core.tokenizer import bytes_to_unicode

    vocab = {s: i for i, s in enumerate(bytes_to_unicode())}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token=None, bos_token=None,
        eos_token="<|im_end|>", pad_token="<|endoftext|>",  # noqa: S106 (tokens, not passwords)
        model_max_length=4096,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:])})
    tokenizer.add_special_tokens({"pad_token": "<|endoftext|>"})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


QWEN_VOCAB = 256 + len(QWEN_SPECIALS)  # the tiny tokenizer's ids are all below this


# -- components -------------------------------------------------------------------------------
def _clip(hidden: int, projection: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=hidden,
        intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=1000, hidden_act="gelu", projection_dim=projection,
    )
    return CLIPTextModelWithProjection(config)


def _clip_plain(hidden: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=hidden,
        intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=1000, hidden_act="gelu", projection_dim=hidden,
    )
    return CLIPTextModel(config)


def _t5(width: int = 32) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=80, d_model=width, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1, is_encoder_decoder=False, use_cache=False,
    )
    return T5EncoderModel(config)


def _qwen3(hidden: int = 16, causal: bool = True) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    config = Qwen3Config(
        intermediate_size=16, hidden_size=hidden, num_hidden_layers=28, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, vocab_size=QWEN_VOCAB, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=258, pad_token_id=256,
    )
    return Qwen3ForCausalLM(config) if causal else Qwen3Model(config)


def _qwen25vl(hidden: int = 16) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    specials = {t: 256 + i for i, t in enumerate(QWEN_SPECIALS)}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": hidden, "intermediate_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": QWEN_VOCAB,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default",
                             "type": "default"},
            "rope_theta": 1000000.0, "tie_word_embeddings": True,
            "bos_token_id": None, "eos_token_id": specials["<|im_end|>"],
            "pad_token_id": specials["<|endoftext|>"],
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": hidden},
        hidden_size=hidden, vocab_size=QWEN_VOCAB, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=specials["<|im_end|>"],
        vision_start_token_id=specials["<|vision_start|>"],
        vision_end_token_id=specials["<|vision_end|>"],
        vision_token_id=specials["<|vision_pad|>"],
        image_token_id=specials["<|image_pad|>"],
        video_token_id=specials["<|video_pad|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def _kl_vae(latent: int, scaling: float, shift: float) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 4, 4),
        layers_per_block=1, latent_channels=latent, norm_num_groups=1, sample_size=32,
        scaling_factor=scaling, shift_factor=shift,
    )


def _flux2_vae() -> Any:
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4), layers_per_block=1, latent_channels=32,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
    )


def _qwen_vae() -> Any:
    from diffusers import AutoencoderKLQwenImage

    return AutoencoderKLQwenImage(
        base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * 16, latents_std=[1.0] * 16,
    )


def _scheduler(**options: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**options)


def build_components(arch: str, variant: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The pipeline components of one tiny family model (random weights, seeded)."""
    import torch
    from diffusers import (
        FluxTransformer2DModel,
        QwenImageTransformer2DModel,
        SD3Transformer2DModel,
        ZImageTransformer2DModel,
    )

    variant = variant or DEFAULT_VARIANT[arch]
    if variant not in FAMILY_VARIANTS[arch]:
        raise ValueError(f"unknown variant {variant!r} of {arch}")
    torch.manual_seed(seed)
    if arch == "sd3":
        layers = 2 if variant == "medium" else 3  # told apart by name in tests; depth is tiny
        return {
            "transformer": SD3Transformer2DModel(
                sample_size=32, patch_size=2, in_channels=16, num_layers=layers,
                attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                joint_attention_dim=32, pooled_projection_dim=80, out_channels=16,
                pos_embed_max_size=64,
                dual_attention_layers=(0,) if variant == "medium" else (),
                qk_norm="rms_norm",  # SD 3.5 Medium and Large both have it
            ),
            "text_encoder": _clip(32, 32),  # CLIP-L (tiny: the narrower)
            "text_encoder_2": _clip(48, 48),  # CLIP-G (OpenCLIP bigG; tiny: the wider)
            "text_encoder_3": _t5(32),
            "tokenizer": clip_tokenizer(),
            "tokenizer_2": clip_tokenizer(),
            "tokenizer_3": t5_tokenizer(),
            "vae": _kl_vae(16, 1.5305, 0.0609),
            "scheduler": _scheduler(shift=3.0),
        }
    if arch == "flux1":
        guidance = variant != "schnell"
        in_channels = 384 if variant == "fill" else 64
        return {
            "transformer": FluxTransformer2DModel(
                patch_size=1, in_channels=in_channels, out_channels=64, num_layers=1,
                num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                guidance_embeds=guidance,
            ),
            "text_encoder": _clip_plain(32),
            "text_encoder_2": _t5(32),
            "tokenizer": clip_tokenizer(),
            "tokenizer_2": t5_tokenizer(),
            "vae": _kl_vae(16, 0.3611, 0.1159),
            "scheduler": _scheduler(
                **({"shift": 1.0, "use_dynamic_shifting": False} if variant == "schnell" else
                   {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096})
            ),
        }
    if arch == "flux2":
        from diffusers import Flux2Transformer2DModel

        return {
            "transformer": Flux2Transformer2DModel(
                patch_size=1, in_channels=128, out_channels=128, num_layers=1,
                num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                joint_attention_dim=48, timestep_guidance_channels=256,
                axes_dims_rope=[4, 4, 4, 4], guidance_embeds=False,
            ),
            "text_encoder": _qwen3(16, causal=True),
            "tokenizer": qwen_tokenizer(),
            "vae": _flux2_vae(),
            "scheduler": _scheduler(
                shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096,
            ),
            "is_distilled": variant == "klein",
        }
    if arch == "zimage":
        return {
            "transformer": ZImageTransformer2DModel(
                all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2,
                n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True,
                cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4],
                axes_lens=[256, 32, 32],
            ),
            "text_encoder": _qwen3(16, causal=False),
            "tokenizer": qwen_tokenizer(),
            "vae": _kl_vae(16, 0.3611, 0.1159),
            "scheduler": _scheduler(shift=3.0 if variant == "turbo" else 6.0),
        }
    if arch == "qwenimage":
        components = {
            "transformer": QwenImageTransformer2DModel(
                patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                guidance_embeds=False, axes_dims_rope=(8, 4, 4),
            ),
            "text_encoder": _qwen25vl(16),
            "tokenizer": qwen_tokenizer(),
            "vae": _qwen_vae(),
            "scheduler": _scheduler(
                shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                base_image_seq_len=256, max_image_seq_len=8192, time_shift_type="exponential",
            ),
        }
        if variant != "base":
            components["processor"] = _qwen_processor()
        return components
    raise ValueError(f"unknown family {arch!r}")


def _qwen_processor() -> Any:
    """Qwen-Image Edit's Qwen2.5-VL processor. transformers 5 builds it with its video processor,
    which needs torchvision: without it this raises RuntimeError (so do the real Edit models)."""
    import transformers
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
    try:
        video_processor = transformers.Qwen2VLVideoProcessor()
    except ImportError as exc:
        raise RuntimeError(
            "Qwen-Image Edit's processor needs torchvision (transformers' Qwen2-VL video "
            "processor); it is not installed"
        ) from exc
    return Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=qwen_tokenizer(),
        video_processor=video_processor, chat_template=QWEN_CHAT_TEMPLATE,
    )


PIPELINES = {
    ("sd3", None): "StableDiffusion3Pipeline",
    ("flux1", None): "FluxPipeline",
    ("flux1", "fill"): "FluxFillPipeline",
    ("flux1", "kontext"): "FluxKontextPipeline",
    ("flux2", None): "Flux2KleinPipeline",
    ("zimage", None): "ZImagePipeline",
    ("qwenimage", None): "QwenImagePipeline",
    ("qwenimage", "edit"): "QwenImageEditPipeline",
    ("qwenimage", "edit-plus"): "QwenImageEditPlusPipeline",
}


def pipeline_class_name(arch: str, variant: str | None = None) -> str:
    variant = variant or DEFAULT_VARIANT[arch]
    return PIPELINES.get((arch, variant)) or PIPELINES[(arch, None)]


def build_pipeline(arch: str, variant: str | None = None, seed: int = 0) -> Any:
    """A tiny diffusers pipeline of one family (random weights), ready to call on the CPU."""
    import diffusers

    cls = getattr(diffusers, pipeline_class_name(arch, variant))
    pipe = cls(**build_components(arch, variant, seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- files ------------------------------------------------------------------------------------
def _save_tensors(state: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(path), metadata=metadata or {"format": "pt"})
    return path


def _part_name(arch: str, variant: str, component: str) -> str:
    return PART_NAMES[arch][component].format(variant=variant)


def save_gguf(state: dict[str, Any], path: Path, architecture: str, quant: str = "F32") -> Path:
    """A GGUF file of a state dict (the same names), as city96's converter writes one:
    ``general.architecture`` set, tensors in torch's shape order (GGUF stores it reversed).
    ``quant="Q8_0"`` stores the 2-D ``.weight`` tensors whose rows are a multiple of 32 as Q8_0
    (the rest F32, as the converter keeps biases, norms and raw parameters such as pad tokens)."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if quant == "F32" else gguf.LlamaFileType.MOSTLY_Q8_0)
    for name, tensor in state.items():
        if tensor.ndim == 0:
            continue
        data = tensor.detach().float().numpy().astype(np.float32)
        if quant == "Q8_0" and name.endswith(".weight") and data.ndim == 2 and data.shape[-1] % 32 == 0:
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def save_family(
    path: Path, arch: str, variant: str | None = None, fmt: str = "diffusers", seed: int = 0,
    quant: str = "F32",
) -> dict[str, Path]:
    """Write one tiny family model at ``path`` in one of the layouts people have; returns the
    written paths by component ("pipeline" for a diffusers folder)."""
    variant = variant or DEFAULT_VARIANT[arch]
    path = Path(path)
    components = build_components(arch, variant, seed)
    if fmt == "diffusers":
        import diffusers

        cls = getattr(diffusers, pipeline_class_name(arch, variant))
        pipe = cls(**components)
        pipe.save_pretrained(str(path), safe_serialization=True)
        return {"pipeline": path}
    if fmt not in ("parts", "single-file", "gguf"):
        raise ValueError(f"unknown format {fmt!r}")
    written: dict[str, Path] = {}
    transformer = components["transformer"].state_dict()
    encoders = [c for c in ("text_encoder", "text_encoder_2", "text_encoder_3") if c in components]
    vae = components["vae"].state_dict()
    name = _part_name(arch, variant, "transformer")
    if fmt == "single-file":
        state = {f"model.diffusion_model.{k}": v for k, v in transformer.items()}
        comfy = {"text_encoder": "clip_l", "text_encoder_2": "clip_g" if arch == "sd3" else "t5xxl",
                 "text_encoder_3": "t5xxl"}
        for component in encoders:
            for k, v in components[component].state_dict().items():
                state[f"text_encoders.{comfy[component]}.transformer.{k}"] = v
        state.update({f"vae.{k}": v for k, v in vae.items()})
        written["checkpoint"] = _save_tensors(state, path / "checkpoints" / f"{name}.safetensors")
        return written
    if fmt == "gguf":
        written["transformer"] = save_gguf(
            transformer, path / "diffusion_models" / f"{name}.gguf", GGUF_ARCH[arch], quant
        )
    else:
        written["transformer"] = _save_tensors(
            transformer, path / "diffusion_models" / f"{name}.safetensors"
        )
    for component in encoders:
        state = components[component].state_dict()
        if type(components[component]).__name__ == "Qwen3Model":
            state = {f"model.{k}": v for k, v in state.items()}  # ComfyUI's qwen_3_4b layout
        written[component] = _save_tensors(
            state,
            path / "text_encoders" / f"{_part_name(arch, variant, component)}.safetensors",
        )
    written["vae"] = _save_tensors(vae, path / "vae" / f"{_part_name(arch, variant, 'vae')}.safetensors")
    return written


def save_family_config(path: Path, arch: str, variant: str | None = None) -> Path:
    """The tiny model's config folder without weights (model_index.json, each component's
    config, tokenizers, scheduler): what core/configs/<arch>-<variant>/ is for the real models,
    for loading the "parts"/"single-file"/"gguf" layouts of the tiny ones."""
    import diffusers

    variant = variant or DEFAULT_VARIANT[arch]
    cls = getattr(diffusers, pipeline_class_name(arch, variant))
    pipe = cls(**build_components(arch, variant))
    pipe.save_pretrained(str(path), safe_serialization=True)
    for weights in Path(path).rglob("*.safetensors"):
        weights.unlink()
    return Path(path)


def write_header_file(path: Path, shapes: dict[str, list[int]], dtype: str = "F16",
                      metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file with these tensor names and shapes and zero-filled data: a real file
    any reader accepts. The data is a hole (a sparse file), so real widths cost no disk."""
    import struct

    header: dict[str, Any] = {}
    offset = 0
    width = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1, "I64": 8}[dtype]
    for key, shape in shapes.items():
        count = 1
        for n in shape:
            count *= n
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count * width]}
        offset += count * width
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.truncate(8 + len(raw) + offset)
    return path
