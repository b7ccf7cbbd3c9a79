"""Turn one pickled model file (``.pth``, ``.pt``, ``.ckpt``, ``.bin``) into ``.safetensors``.

Most upscalers, and older LoRAs and embeddings, are published as PyTorch pickles, which the server
refuses to open (unpickling runs whatever code the file carries). ``obscura models convert FILE``
converts one, on the owner's say-so, in a **separate process** (:mod:`core.convert_worker`): an
isolated interpreter with no network (an empty network namespace where Linux allows it, and an
audit hook that refuses sockets, new processes and writes elsewhere), which unpickles with
``torch.load(weights_only=True)`` only. The server process never unpickles anything.

The result is written to a temporary name beside the output and renamed into place once it is
complete; the output is checked by reading its header back (:func:`core.registry.read_safetensors_header`)
and telling what kind of model file it is (:func:`core.library.detect_kind`). Nothing is written
next to the input: the output is an explicit path or Obscura's own models folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError, ModelError
from core.offline import PRIVACY_ENV
from core.registry import PICKLE_SUFFIXES, read_safetensors_header

WORKER = Path(__file__).with_name("convert_worker.py")
TIMEOUT_S = 3600  # a 7 GB checkpoint on a slow disk takes minutes, not hours


@dataclass(frozen=True)
class Conversion:
    output: Path
    kind: str | None  # what core.library.detect_kind makes of the result
    tensors: int
    dropped: int  # entries that were not tensors (step counters, names): left out
    unwrapped: str | None  # the wrapper the state dict was found in ("params_ema", ...)
    network_guard: str  # which guards held in the worker


def _worker_env() -> dict[str, str]:
    """A bare environment: no proxy variables, no PYTHON* settings, the offline switches on."""
    keep = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    return {**keep, **PRIVACY_ENV, "OMP_NUM_THREADS": "1"}


def convert_pickle(source: Path, output: Path, *, timeout: float = TIMEOUT_S) -> Conversion:
    """Convert ``source`` (a pickle) to ``output`` (``.safetensors``) in a network-less child."""
    from core.library import detect_kind

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise InputError("convert_no_file", "There is no file to convert at that path.")
    if source.suffix.lower() not in PICKLE_SUFFIXES:
        raise InputError(
            "convert_not_pickle",
            "Only pickle files (.pth, .pt, .ckpt, .bin, .pkl) need converting; "
            ".safetensors files are used as they are.",
        )
    if output.suffix.lower() != ".safetensors":
        raise InputError("convert_bad_output", "The output file must end in .safetensors.")
    if output.exists():
        raise InputError(
            "convert_output_exists", "The output file already exists; remove it or choose --out."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.converting")
    temporary.unlink(missing_ok=True)
    try:
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(WORKER), str(source.resolve()), str(temporary.resolve())],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_worker_env(),
                cwd=str(temporary.parent),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ModelError(
                "convert_timeout", "The conversion took too long and was stopped."
            ) from None
        lines = done.stdout.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            answer = {}
        if not answer.get("ok"):
            raise ModelError(
                "convert_failed",
                str(
                    answer.get("error")
                    or "The converter stopped without an answer (it may have run out of memory)."
                ),
            )
        header = read_safetensors_header(temporary)  # complete and readable, or ModelError
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    return Conversion(
        output=output,
        kind=detect_kind(header),
        tensors=int(answer.get("tensors", 0)),
        dropped=int(answer.get("dropped", 0)),
        unwrapped=answer.get("unwrapped"),
        network_guard=str(answer.get("network_guard", "audit hook")),
    )
