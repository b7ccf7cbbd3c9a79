"""The child process of ``obscura models convert``: one pickle in, one ``.safetensors`` out.

Run only by :func:`core.convert.convert_pickle`, as ``python -I convert_worker.py SRC TMP``: an
isolated interpreter (no ``PYTHON*`` variables, no user site, not even this folder on
``sys.path``) that imports nothing of Obscura. Before it imports torch it

1. leaves the network: on Linux it moves into a new, empty network namespace (``unshare``) when
   the kernel allows that (root, or unprivileged user namespaces), so there is no interface but a
   down loopback to reach anything through;
2. installs an audit hook (PEP 578) that refuses, for the rest of its life, every socket
   (``socket.__new__``/``connect``/``bind``/``getaddrinfo``...), every new process (``fork``,
   ``exec``, ``subprocess``, ``os.system``) and every file opened for writing except ``TMP``.

Then it unpickles with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which
builds only tensors, dicts, lists, numbers and strings and refuses any other class or function a
pickle asks for, so a file that would run code fails to load instead. That is the defence; steps 1
and 2 are a second line for a bug in it. Limits: an audit hook binds Python code only (native
code in an extension module could still make a system call), and nothing here caps memory, so a
huge or hostile file can still exhaust it: convert files from sources you have reason to trust.

It prints one JSON line: ``{"ok": true, ...facts}`` or ``{"ok": false, "error": sentence}``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

# Where real state dicts sit inside what people save (spandrel's and A1111's wrappers).
UNWRAP_KEYS = ("state_dict", "model_state_dict", "params_ema", "params-ema", "params", "model", "net")
COMMON_PREFIXES = ("module.", "netG.")

_PROCESS_EVENTS = {
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
    "subprocess.Popen", "pty.spawn", "os.startfile",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def leave_network() -> str:
    """Enter an empty network namespace when the kernel allows it; which guard holds."""
    if not sys.platform.startswith("linux"):
        return "audit hook"
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
            if libc.unshare(flags) == 0:
                return "network namespace and audit hook"
    except (OSError, AttributeError):
        pass
    return "audit hook"


def install_guards(writable: str) -> None:
    """From now on: no sockets, no new processes, no writes except to ``writable``."""
    allowed = os.path.realpath(writable)

    def guard(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith("socket."):
            raise PermissionError("the converter has no network")
        if event in _PROCESS_EVENTS:
            raise PermissionError("the converter starts no other program")
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            if isinstance(mode, str):
                writing = any(c in mode for c in "wax+")
            else:
                writing = isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
            if writing and not (
                isinstance(path, (str, bytes, os.PathLike))
                and os.path.realpath(os.fsdecode(path)) == allowed
            ):
                raise PermissionError("the converter writes only its output file")

    sys.addaudithook(guard)


def _unwrap(obj: Any) -> tuple[Any, str | None]:
    if isinstance(obj, dict):
        for key in UNWRAP_KEYS:
            if isinstance(obj.get(key), dict):
                return obj[key], key
    return obj, None


def _a1111_embedding(obj: Any, torch: Any) -> dict[str, Any] | None:
    """A1111's .pt embedding ({"string_to_param": {"*": tensor}, "name": ...}) in the form A1111
    itself writes as .safetensors ({"emb_params": tensor})."""
    if isinstance(obj, dict) and isinstance(obj.get("string_to_param"), dict):
        params = [v for v in obj["string_to_param"].values() if isinstance(v, torch.Tensor)]
        if len(params) == 1:
            return {"emb_params": params[0]}
    return None


def flat_tensors(obj: Any, torch: Any) -> tuple[dict[str, Any], int, str | None]:
    """(tensors by name, how many non-tensor entries were left out, the wrapper unwrapped)."""
    embedding = _a1111_embedding(obj, torch)
    if embedding is not None:
        return embedding, 0, "string_to_param"
    inner, unwrapped = _unwrap(obj)
    tensors: dict[str, Any] = {}
    dropped = 0

    def walk(value: Any, prefix: str) -> None:
        nonlocal dropped
        if isinstance(value, torch.Tensor):
            tensors[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        else:
            dropped += 1

    walk(inner, "")
    for common in COMMON_PREFIXES:
        if tensors and all(name.startswith(common) for name in tensors):
            tensors = {name[len(common):]: t for name, t in tensors.items()}
    return tensors, dropped, unwrapped


def _refusal(exc: BaseException) -> str:
    text = str(exc)
    asked = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
    what = f" (it asks for {asked.group(1)})" if asked else ""
    return (
        f"This file holds more than tensors{what}, so it cannot be converted safely: "
        "torch.load(weights_only=True) refused to open it. Get the .safetensors version instead."
    )


def convert(src: str, tmp: str) -> dict[str, Any]:
    import pickle

    import torch
    from safetensors.torch import save_file

    try:
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        return {"ok": False, "error": _refusal(exc)}
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError) as exc:
        return {
            "ok": False,
            "error": "The file is not a PyTorch pickle that can be read "
            f"({type(exc).__name__}); it may be damaged or of another format.",
        }
    tensors, dropped, unwrapped = flat_tensors(obj, torch)
    if not tensors:
        return {"ok": False, "error": "The file holds no tensors, so there is nothing to convert."}
    seen: set[int] = set()
    ready: dict[str, Any] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:  # safetensors keeps no shared storage: give the copy its own
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        ready[name] = tensor
    save_file(ready, tmp, metadata={"converted_by": "obscura models convert"})
    return {"ok": True, "tensors": len(ready), "dropped": dropped, "unwrapped": unwrapped}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(json.dumps({"ok": False, "error": "usage: convert_worker.py SRC TMP"}))
        return 2
    src, tmp = argv[1], argv[2]
    import warnings

    warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not for the owner
    network = leave_network()  # before torch starts any thread
    install_guards(tmp)
    result = convert(src, tmp)
    result["network_guard"] = network
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
