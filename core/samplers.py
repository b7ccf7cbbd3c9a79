"""Samplers by the names people know from AUTOMATIC1111, mapped to diffusers schedulers.

Each scheduler is built from the loaded model's own scheduler config, so the model's training
settings (beta schedule, prediction type, timestep spacing) carry over and only the sampling
algorithm changes.

AUTOMATIC1111 lets any sampler go with any *schedule* (its ``scheduler`` field: Karras,
Exponential, ...). Here a schedule is a diffusers option of the sampler's scheduler class, named
the way AUTOMATIC1111 names the pair: ``"Euler Karras"``, ``"UniPC SGM Uniform"``
(:func:`find_sampler` takes those names, :func:`with_schedule` makes them). A schedule the
sampler's class cannot follow, or a name that is not one of :data:`SCHEDULES`, leaves the
sampler on its own schedule (AUTOMATIC1111's ``automatic``) instead of failing.
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


@dataclass(frozen=True)
class Schedule:
    name: str  # AUTOMATIC1111's scheduler name ("karras")
    label: str  # and its label ("Karras")
    options: dict[str, Any]  # the diffusers scheduler options that follow it
    aliases: tuple[str, ...] = ()


# AUTOMATIC1111's schedules that diffusers' schedulers can follow. Its others (uniform,
# polyexponential, kl_optimal, align_your_steps, simple, normal, ddim, karras_exponential) have
# no diffusers option, and beta needs scipy, which is not installed: asked for, they are
# "automatic" (the sampler's own schedule).
SCHEDULES: dict[str, Schedule] = {
    s.name: s
    for s in [
        Schedule("automatic", "Automatic", {}),
        Schedule("karras", "Karras", {"use_karras_sigmas": True}),
        Schedule("exponential", "Exponential", {"use_exponential_sigmas": True}),
        Schedule("sgm_uniform", "SGM Uniform", {"timestep_spacing": "trailing"}, ("SGMUniform",)),
    ]
}
_SIGMA_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def find_schedule(name: str | None) -> Schedule | None:
    """The schedule AUTOMATIC1111 calls ``name`` (its name, label or alias, any case), if
    diffusers can follow it; ``None`` for every other name."""
    wanted = str(name or "automatic").strip().lower()
    for schedule in SCHEDULES.values():
        if wanted in (schedule.name, schedule.label.lower(), *(a.lower() for a in schedule.aliases)):
            return schedule
    return None


def _can_follow(sampler: Sampler, schedule: Schedule) -> bool:
    import inspect

    import diffusers

    if any(sampler.options.get(option) for option in _SIGMA_OPTIONS):
        return False  # already on a schedule of its own ("DPM++ 2M Karras")
    if sampler.scheduler in _RESCHEDULED and set(schedule.options) <= set(_RESCHEDULED_OPTIONS):
        return True
    accepted = inspect.signature(getattr(diffusers, sampler.scheduler).__init__).parameters
    return all(option in accepted for option in schedule.options)


# diffusers' Euler a has no Karras or exponential option; AUTOMATIC1111's Euler a goes with
# both (Open WebUI suggests "Euler a" + "Karras"). Its sigmas are replaced after
# ``set_timesteps`` with the ones diffusers' Euler computes for that schedule.
_RESCHEDULED = {"EulerAncestralDiscreteScheduler"}
_RESCHEDULED_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas")


def _rescheduled(cls: Any, option: str) -> Any:
    import diffusers
    import numpy as np
    import torch

    euler = diffusers.EulerDiscreteScheduler
    convert = euler._convert_to_karras if option == "use_karras_sigmas" else (
        euler._convert_to_exponential
    )

    def set_timesteps(self: Any, num_inference_steps: int, device: Any = None) -> None:
        cls.set_timesteps(self, num_inference_steps, device)
        sigmas = self.sigmas[:-1].to(torch.float64)
        schedule = np.asarray(convert(self, sigmas, num_inference_steps), dtype=np.float64)
        every = np.log(((1 - self.alphas_cumprod.numpy()) / self.alphas_cumprod.numpy()) ** 0.5)
        timesteps = np.array([euler._sigma_to_t(self, sigma, every) for sigma in schedule])
        self.sigmas = torch.from_numpy(np.concatenate([schedule, [0.0]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device=device)

    return type(f"{cls.__name__}{option}", (cls,), {"set_timesteps": set_timesteps})


def _plain(name: str) -> Sampler | None:
    wanted = name.strip().lower()
    return SAMPLERS.get(name) or next(
        (s for s in SAMPLERS.values() if s.name.lower() == wanted), None
    )


def _scheduled(sampler: Sampler, schedule: Schedule) -> Sampler:
    return Sampler(
        f"{sampler.name} {schedule.label}", sampler.scheduler,
        {**sampler.options, **schedule.options},
    )


def with_schedule(name: str | None, scheduler: str | None) -> tuple[str, Schedule]:
    """The sampler name that follows AUTOMATIC1111's ``scheduler`` (``"Euler"`` + ``"karras"``
    → ``"Euler Karras"``) and the schedule it follows: ``automatic`` for an unknown name or one
    this sampler's class cannot follow. A schedule in the sampler's name wins, as in
    AUTOMATIC1111. Raises :class:`InputError` for an unknown sampler only."""
    sampler = find_sampler(name)
    automatic = SCHEDULES["automatic"]
    for named in SCHEDULES.values():  # "DPM++ 2M Karras", "Euler Exponential"
        if named is not automatic and sampler.name.endswith(f" {named.label}"):
            return sampler.name, named
    schedule = find_schedule(scheduler)
    if schedule is None or schedule is automatic:
        return sampler.name, automatic
    if _plain(f"{sampler.name} {schedule.label}") is not None:
        return f"{sampler.name} {schedule.label}", schedule  # a sampler of its own
    if not _can_follow(sampler, schedule):
        return sampler.name, automatic
    return f"{sampler.name} {schedule.label}", schedule


def find_sampler(name: str | None) -> Sampler:
    if name is None:
        return SAMPLERS[DEFAULT_SAMPLER]
    sampler = _plain(str(name))
    if sampler is None:  # AUTOMATIC1111's "<sampler> <schedule>" ("Euler Karras")
        text = str(name).strip()
        for schedule in SCHEDULES.values():
            for label in (schedule.label, *schedule.aliases):
                if schedule.options and text.lower().endswith(f" {label.lower()}"):
                    base = _plain(text[: -len(label) - 1])
                    if base is not None and _can_follow(base, schedule):
                        sampler = _scheduled(base, schedule)
                        break
            if sampler is not None:
                break
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
    options = dict(sampler.options)
    if cls.__name__ in _RESCHEDULED:
        for option in _RESCHEDULED_OPTIONS:
            if options.pop(option, False):
                cls = _rescheduled(cls, option)
    return cls.from_config(config, **options)


# -- the transformer (flow-matching) families ------------------------------------------------
# Their schedulers predict a velocity, not noise: AUTOMATIC1111's names map to diffusers' flow
# schedulers (Forge and ComfyUI do the same with their "Simple" schedule). Each is built from the
# model's own FlowMatchEulerDiscreteScheduler config, so the model's shift and dynamic shifting
# carry over (``flow_shift`` for the multistep solvers).
# - "Euler a": FlowMatchEulerDiscreteScheduler's stochastic_sampling, which at every step
#   predicts the clean picture and re-noises it to the next sigma with fresh noise: the
#   ancestral Euler step of rectified flow (ComfyUI's euler_ancestral_RF at eta 1).
# - "DPM++ 2M" / "UniPC": the multistep solvers on flow sigmas (``use_flow_sigmas``,
#   ``prediction_type="flow_prediction"``), as diffusers' Wan and SANA pipelines use them.
_FLOW_OPTIONS = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
FLOW_SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in [
        Sampler("Euler", "FlowMatchEulerDiscreteScheduler"),
        Sampler("Euler a", "FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
        Sampler("Heun", "FlowMatchHeunDiscreteScheduler"),
        Sampler(
            "DPM++ 2M",
            "DPMSolverMultistepScheduler",
            {**_FLOW_OPTIONS, "algorithm_type": "dpmsolver++", "solver_order": 2},
        ),
        Sampler("UniPC", "UniPCMultistepScheduler", {**_FLOW_OPTIONS}),
    ]
}


def find_flow_sampler(name: str | None, allowed: list[str] | tuple[str, ...]) -> Sampler:
    """The flow sampler called ``name`` (any case; ``None``: the first allowed). A name that is
    not one of ``allowed`` (the model family's list, core/families.py) is one sentence."""
    if name is None:
        return FLOW_SAMPLERS[allowed[0]]
    wanted = str(name).strip().lower()
    for known in allowed:
        if known.lower() == wanted:
            return FLOW_SAMPLERS[known]
    raise InputError(
        "sampler_not_for_model",
        "This model cannot use that sampler; choose one of: {names}.",
        names=", ".join(allowed),
    )


def _scheduled_heun(base_config: dict[str, Any]) -> Any:
    """diffusers' flow Heun with the model's own schedule.

    FlowMatchHeunDiscreteScheduler takes neither the ``sigmas`` the FLUX / Z-Image / Qwen-Image
    pipelines pass nor their dynamic shift ``mu``. This subclass takes both and has diffusers'
    FlowMatchEulerDiscreteScheduler (built from the model's config) compute the sigmas, exactly
    as the Euler sampler would run them; Heun's own second-order step then walks them."""
    import diffusers
    import torch

    heun = diffusers.FlowMatchHeunDiscreteScheduler

    def set_timesteps(
        self: Any, num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None,
        mu: float | None = None, timesteps: Any = None,
    ) -> None:
        euler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(base_config)
        euler.set_timesteps(num_inference_steps, device, sigmas=sigmas, mu=mu, timesteps=timesteps)
        schedule = euler.sigmas[:-1].to(dtype=torch.float32, device=device)
        self.num_inference_steps = len(schedule)
        steps = schedule * self.config.num_train_timesteps
        self.timesteps = torch.cat([steps[:1], steps[1:].repeat_interleave(2)])
        schedule = torch.cat([schedule, torch.zeros(1, device=schedule.device)])
        self.sigmas = torch.cat(
            [schedule[:1], schedule[1:-1].repeat_interleave(2), schedule[-1:]]
        )
        self.prev_derivative = None
        self.dt = None
        self._step_index = None
        self._begin_index = None

    return type("FlowMatchHeunScheduled", (heun,), {"set_timesteps": set_timesteps})


def make_flow_scheduler(sampler: Sampler, base_config: Any) -> Any:
    """A fresh flow scheduler for one job, from the model's own scheduler config."""
    import inspect

    import diffusers

    cls = getattr(diffusers, sampler.scheduler)
    if cls is diffusers.FlowMatchHeunDiscreteScheduler:
        cls = _scheduled_heun(dict(base_config))
    config = dict(base_config)
    options = dict(sampler.options)
    if options.get("use_flow_sigmas"):
        options["flow_shift"] = float(config.get("shift", 1.0))
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in config.items() if k in accepted or k.startswith("_")}
    return cls.from_config(config, **options)
