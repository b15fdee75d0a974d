"""The generator: SD1.5 + Canny ControlNet + IP-Adapter, loaded once and reused for every call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from PIL import Image

from .errors import GenerationCancelled, ParameterError, SdragError, WeightsUnavailableError
from .hub import Part, Plan, load, quiet_loading
from .params import SD15_LAYOUT, Params, layer_scales
from .presets import ModelSpec, checked_tokenizer

Progress = Callable[[int, int], "bool | None"]

_SCHEDULERS = {
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
}


@dataclass(frozen=True)
class MemoryOptions:
    """Memory savers; each keeps IP-Adapter active (checked after they are applied)."""

    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False

    @classmethod
    def from_any(cls, value: MemoryOptions | dict | None) -> MemoryOptions:
        """Accept an instance, a dict of flags, or None (all off)."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if not isinstance(value, dict):
            raise ParameterError(f"memory must be a dict of flags, got {value!r}.")
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise ParameterError(f"Unknown memory option(s) {unknown}. Known: {sorted(cls.__dataclass_fields__)}.")
        return cls(**{k: bool(v) for k, v in value.items()})


class Generator:
    """StableDiffusionControlNetPipeline with IP-Adapter; stages are separate so callers can cache them."""

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, plan: Plan,
                 memory: MemoryOptions | dict | None = None):
        """Load every component of `plan` onto `device` in `dtype` (IP-Adapter last, as diffusers requires)."""
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.memory = MemoryOptions.from_any(memory)
        if self.memory.cpu_offload and device.type != "cuda":
            raise ParameterError("memory cpu_offload needs a CUDA device; on CPU everything is in RAM already.")
        with quiet_loading():
            self.pipe = self._load(plan)
        self._apply_memory(self.memory)
        self._scheduler_config = dict(self.pipe.scheduler.config)
        self._check_ip_active()

    def _load(self, plan: Plan):
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

        dtype = self.dtype

        def controlnet(part: Part):
            return ControlNetModel.from_pretrained(part.source, dtype=dtype, **part.kwargs())

        def pipeline(part: Part):
            # The safety checker is passed as None, so its weights (1.2 GB in SD1.5) are never downloaded.
            return StableDiffusionControlNetPipeline.from_pretrained(
                part.source, controlnet=load(plan["controlnet"], controlnet), safety_checker=None,
                requires_safety_checker=False, dtype=dtype, **part.kwargs())

        pipe = load(plan["base"], pipeline)
        checked_tokenizer(pipe.tokenizer, plan["base"].where)
        _check_layout(pipe.unet)
        pipe.set_progress_bar_config(disable=True)
        if not self.memory.cpu_offload:
            pipe.to(self.device)
        # The image encoder is created in the pipeline's dtype and device: load it after moving.
        load(plan["ip_adapter"], lambda part: self._load_ip_adapter(pipe, part))
        return pipe

    def _load_ip_adapter(self, pipe, part: Part) -> None:
        """Load the IP-Adapter image encoder (at the planned revision, safetensors unless allowed), then its weights."""
        from transformers import CLIPVisionModelWithProjection

        # Loaded here rather than by load_ip_adapter, which would pass neither the revision nor use_safetensors
        # (and so fall back to a pickled pytorch_model.bin silently).
        encoder = CLIPVisionModelWithProjection.from_pretrained(
            part.source, subfolder=self.spec.image_encoder_subfolder, dtype=self.dtype, **part.kwargs())
        pipe.register_modules(image_encoder=encoder.to(pipe.device))
        pipe.load_ip_adapter(part.source, subfolder=self.spec.ip_adapter_subfolder,
                             weight_name=self.spec.ip_adapter_weight, image_encoder_folder=None, **part.hub_kwargs())

    # -- set-up checks ----------------------------------------------------------------------------------

    def use_memory(self, memory: MemoryOptions) -> MemoryOptions:
        """Switch on more memory savers in the loaded pipeline (never off); return the ones newly applied."""
        new = MemoryOptions(**{k: v and not getattr(self.memory, k) for k, v in asdict(memory).items()})
        if any(asdict(new).values()):
            self._apply_memory(new)
            self.memory = MemoryOptions(**{k: v or getattr(self.memory, k) for k, v in asdict(memory).items()})
            self._check_ip_active()
        return new

    def _apply_memory(self, memory: MemoryOptions) -> None:
        from diffusers.models.attention_processor import Attention

        if memory.attention_slicing:
            # Only self-attention is sliced: it holds the big (HW x HW) maps, and slicing cross-attention
            # would replace the IP-Adapter processors and silently switch IP-Adapter off.
            for module in self.pipe.unet.modules():
                if isinstance(module, Attention) and not module.is_cross_attention:
                    module.set_attention_slice(max(1, module.heads // 2))
            self.pipe.controlnet.set_attention_slice("auto")
        if memory.vae_tiling:
            self.pipe.vae.enable_tiling()
        if memory.cpu_offload:
            self.pipe.enable_model_cpu_offload(device=self.device)

    def _check_ip_active(self) -> None:
        procs = self.ip_processors()
        expected = sum(SD15_LAYOUT["down"].values()) + SD15_LAYOUT["mid"] + sum(SD15_LAYOUT["up"].values())
        if len(procs) != expected:
            raise SdragError(
                f"IP-Adapter is active on {len(procs)} of {expected} cross-attention layers after set-up; a memory"
                " option replaced its processors. Fix: turn that memory option off and report the diffusers version."
            )

    def ip_processors(self) -> dict[str, object]:
        """The IP-Adapter attention processors of the UNet, by layer prefix."""
        return {name.rsplit(".transformer_blocks", 1)[0]: proc
                for name, proc in self.pipe.unet.attn_processors.items() if hasattr(proc, "scale")
                and name.endswith("attn2.processor")}

    # -- stages ---------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """Return (positive, negative) text embeddings for one image."""
        pos, neg = self.pipe.encode_prompt(prompt, self._exec_device, 1, True, negative_prompt or None)
        return pos, neg

    @torch.inference_mode()
    def style_embeds(self, images: Sequence[Image.Image], weights: Sequence[float] | None = None) -> torch.Tensor:
        """Return IP-Adapter image embeddings [negative, positive] for one reference or a weighted blend.

        Several references are blended on the embeddings (weights normalised to sum 1); diffusers itself
        would concatenate them as extra tokens instead.
        """
        from diffusers.models.embeddings import ImageProjection

        images = list(images)
        w = torch.tensor([1.0] * len(images) if weights is None else list(weights), dtype=torch.float32)
        if not images or len(w) != len(images) or not torch.isfinite(w).all() or (w <= 0).any():
            raise ParameterError("style blend needs one weight > 0 per reference image.")
        w = w / w.sum()
        proj = self.pipe.unet.encoder_hid_proj.image_projection_layers[0]
        pos, neg = self.pipe.encode_image(images, self._exec_device, 1, not isinstance(proj, ImageProjection))
        shape = (-1,) + (1,) * (pos.dim() - 1)
        w = w.to(pos.device, torch.float32).view(shape)
        blend = [(w * t.float()).sum(0, keepdim=True).to(t.dtype)[None] for t in (neg, pos)]
        return torch.cat(blend, dim=0)

    def set_ip_scale(self, scale: float | dict) -> dict[str, float]:
        """Set IP-Adapter scales on every layer (state on the pipeline) and return what the processors hold."""
        self.pipe.set_ip_adapter_scale(scale)
        want = layer_scales(scale)
        got = {name: float(proc.scale[0]) for name, proc in self.ip_processors().items()}
        if got != want:
            raise SdragError(f"IP-Adapter scales did not apply as asked (asked {want}, set {got}).")
        return got

    @torch.inference_mode()
    def generate(
        self,
        control: Image.Image,
        params: Params,
        style: torch.Tensor | None = None,
        prompt_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
        progress: Progress | None = None,
    ) -> list[Image.Image]:
        """Generate one image per seed from a sized control image, resolved params and style embeddings.

        `style` is the output of `style_embeds`; None runs without a reference (IP-Adapter scale forced
        to 0). `progress(step, total)` is called after every step; returning False stops the run.
        """
        import diffusers

        p = params
        w, h = p.width_height
        if control.size != (w, h):
            raise ParameterError(f"control image is {control.size}, expected {(w, h)}; fit it first.")
        scheduler_cls = getattr(diffusers, _SCHEDULERS[p.scheduler])
        self.pipe.scheduler = scheduler_cls.from_config(self._scheduler_config)
        # Scale is pipeline state: set it on every call so nothing leaks from the previous one.
        self.set_ip_scale(p.ip_adapter_scale if style is not None else 0.0)
        pos, neg = prompt_embeds if prompt_embeds is not None else self.encode_prompt(p.prompt, p.negative_prompt)
        cfg = p.guidance > 1.0
        if style is None:
            style = self.style_embeds([Image.new("RGB", (w, h), "white")])
        ip = style if cfg else style.chunk(2)[1]
        # CPU generators make the same seed give the same latents on any device.
        generators = [torch.Generator("cpu").manual_seed(s) for s in p.seeds]
        stopped = []

        def on_step(pipe, i, t, kwargs):
            if progress is not None and progress(i + 1, p.steps) is False:
                pipe._interrupt = True
                stopped.append(i + 1)
            return kwargs

        with _conditioning_once(self.pipe.controlnet):
            out = self.pipe(
                prompt_embeds=pos, negative_prompt_embeds=neg if cfg else None, image=control,
                ip_adapter_image_embeds=[ip.to(self._exec_device, self.dtype)],
                num_inference_steps=p.steps, guidance_scale=p.guidance,
                controlnet_conditioning_scale=p.controlnet_scale,
                control_guidance_start=p.control_start, control_guidance_end=p.control_end,
                generator=generators, num_images_per_prompt=len(generators), width=w, height=h,
                callback_on_step_end=on_step, output_type="pil",
            )
        if stopped:
            raise GenerationCancelled(f"Generation stopped by the progress callback after step {stopped[0]}.")
        return list(out.images)

    @property
    def _exec_device(self) -> torch.device:
        return self.pipe._execution_device

    def info(self) -> dict:
        """Describe the loaded models (JSON-serialisable) for results and manifests."""
        import diffusers
        import transformers

        return {"models": self.spec.to_dict(), "device": str(self.device), "dtype": str(self.dtype).split(".")[-1],
                "memory": asdict(self.memory), "torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__}


class _ConditioningOnce(torch.nn.Module):
    """Stands in for a ControlNet's conditioning embedding during one call: the embedding depends on the
    control image alone, yet diffusers recomputes it at every step (and the result is identical)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self._cond = self._out = None

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        # Identity, not value: the pipeline passes the same tensor object at every step of a call, and
        # holding it keeps its memory from being reused by another tensor meanwhile.
        if self._cond is not cond:
            self._cond, self._out = cond, self.inner(cond)
        return self._out


@contextlib.contextmanager
def _conditioning_once(controlnet: torch.nn.Module):
    inner = controlnet.controlnet_cond_embedding
    controlnet.controlnet_cond_embedding = _ConditioningOnce(inner)
    try:
        yield
    finally:
        controlnet.controlnet_cond_embedding = inner


def _check_layout(unet) -> None:
    """Refuse a UNet whose attention blocks differ from SD1.5's (block maps would mean something else)."""
    layout = {
        "down": {i: len(b.attentions) for i, b in enumerate(unet.down_blocks) if hasattr(b, "attentions")},
        "mid": len(getattr(unet.mid_block, "attentions", [])),
        "up": {i: len(b.attentions) for i, b in enumerate(unet.up_blocks) if hasattr(b, "attentions")},
    }
    if layout != SD15_LAYOUT:
        raise WeightsUnavailableError(
            f"The UNet's attention layout {layout} is not SD1.5's {SD15_LAYOUT}. Fix: use SD1.5-family weights."
        )
