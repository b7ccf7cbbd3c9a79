"""Samplers by the names people know from AUTOMATIC1111, mapped to diffusers schedulers.

Each scheduler is built from the loaded model's own scheduler config, so the model's training
settings (beta schedule, prediction type, timestep spacing) carry over and only the sampling
algorithm changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import InputError


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in [
        Sampler("Euler", "EulerDiscreteScheduler"),
        Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("Heun", "HeunDiscreteScheduler"),
        Sampler(
            "DPM++ 2M",
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2},
        ),
        Sampler(
            "DPM++ 2M Karras",
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        ),
        Sampler(
            "DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}
        ),
        Sampler(
            "DPM++ 2M SDE Karras",
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
        ),
        Sampler("DPM2", "KDPM2DiscreteScheduler"),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
        Sampler("DDIM", "DDIMScheduler"),
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
        Sampler("UniPC", "UniPCMultistepScheduler"),
        Sampler("DEIS", "DEISMultistepScheduler"),
        Sampler("LCM", "LCMScheduler"),
    ]
}
DEFAULT_SAMPLER = "Euler a"


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def find_sampler(name: str | None) -> Sampler:
    if name is None:
        return SAMPLERS[DEFAULT_SAMPLER]
    sampler = SAMPLERS.get(name) or next(
        (s for s in SAMPLERS.values() if s.name.lower() == str(name).strip().lower()), None
    )
    if sampler is None:
        raise InputError(
            "unknown_sampler",
            "Unknown sampler; choose one of: {names}.",
            names=", ".join(SAMPLERS),
        )
    return sampler


def make_scheduler(sampler: Sampler, base_config: Any) -> Any:
    """A fresh scheduler for one job (schedulers keep per-run state, so jobs never share one)."""
    import diffusers

    cls = getattr(diffusers, sampler.scheduler)
    config = dict(base_config)
    return cls.from_config(config, **sampler.options)
