"""The generator: SD1.5 + Canny ControlNet + IP-Adapter, loaded once and reused for every call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from ..errors import GenerationCancelled, ParameterError, SdragError, WeightsUnavailableError
from ..models.loading import checked_tokenizer, load
from ..models.plan import Part, Plan
from ..models.presets import ModelSpec
from ..models.quiet import quiet_loading
from ..models.sd15 import ATTENTION_LAYERS, ATTENTION_LAYOUT, SCHEDULERS
from .ipscale import layer_scales
from .memory import MemoryOptions
from .params import ResolvedParams

Progress = Callable[[int, int], "bool | None"]


class Generator:
    """StableDiffusionControlNetPipeline with IP-Adapter; stages are separate so callers can cache them."""

    def __init__(self, sources: ModelSpec, device: torch.device, dtype: torch.dtype, plan: Plan,
                 memory: MemoryOptions):
        """Load every component of `plan` onto `device` in `dtype` (IP-Adapter last, as diffusers requires),
        with the memory savers `memory` switches on (the caller owns that choice: see `apply_memory`)."""
        self.sources = sources
        self.device = device
        self.dtype = dtype
        memory.check(device)  # before minutes of loading
        with quiet_loading():
            self.pipe = self._load(plan, offload=memory.cpu_offload)
        self.apply_memory(memory)
        self._scheduler_config = dict(self.pipe.scheduler.config)

    def _load(self, plan: Plan, offload: bool):
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
        if not offload:
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
            part.source, subfolder=self.sources.image_encoder_subfolder, dtype=self.dtype, **part.kwargs())
        pipe.register_modules(image_encoder=encoder.to(pipe.device))
        pipe.load_ip_adapter(part.source, subfolder=self.sources.ip_adapter_subfolder,
                             weight_name=self.sources.ip_adapter_weight, image_encoder_folder=None, **part.hub_kwargs())

    # -- set-up checks ----------------------------------------------------------------------------------

    def apply_memory(self, memory: MemoryOptions) -> None:
        """Switch on the savers in `memory` in the loaded pipeline (savers only ever switch on)."""
        from diffusers.models.attention_processor import Attention

        memory.check(self.device)
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
        self._check_ip_active()

    def _check_ip_active(self) -> None:
        procs = self.ip_processors()
        if len(procs) != ATTENTION_LAYERS:
            raise SdragError(
                f"IP-Adapter is active on {len(procs)} of {ATTENTION_LAYERS} cross-attention layers after set-up; a"
                " memory option replaced its processors. Fix: turn that memory option off and report the diffusers"
                " version."
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
    def image_embeds(self, images: Sequence[Image.Image], weights: Sequence[float] | None = None) -> torch.Tensor:
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
        params: ResolvedParams,
        ip_embeds: torch.Tensor | None = None,
        prompt_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
        progress: Progress | None = None,
    ) -> list[Image.Image]:
        """Generate one image per seed from a sized control image, resolved params and IP-Adapter embeddings.

        `ip_embeds` is the output of `image_embeds`; None runs without a reference (IP-Adapter scale forced
        to 0). `progress(step, total)` is called after every step; returning False stops the run.
        """
        import diffusers

        if not isinstance(params, ResolvedParams):
            raise ParameterError(f"generate takes resolved parameters, got {type(params).__name__}. Fix: pass"
                                 " params.resolved(), which also checks them.")
        p = params
        w, h = p.width_height
        if control.size != (w, h):
            raise ParameterError(f"control image is {control.size}, expected {(w, h)}; fit it first.")
        scheduler_cls = getattr(diffusers, SCHEDULERS[p.scheduler])
        self.pipe.scheduler = scheduler_cls.from_config(self._scheduler_config)
        # Scale is pipeline state: set it on every call so nothing leaks from the previous one.
        self.set_ip_scale(p.ip_adapter_scale if ip_embeds is not None else 0.0)
        pos, neg = prompt_embeds if prompt_embeds is not None else self.encode_prompt(p.prompt, p.negative_prompt)
        cfg = p.guidance > 1.0
        if ip_embeds is None:
            ip_embeds = self.image_embeds([Image.new("RGB", (w, h), "white")])
        ip = ip_embeds if cfg else ip_embeds.chunk(2)[1]
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

        return {"models": self.sources.to_dict(), "device": str(self.device), "dtype": str(self.dtype).split(".")[-1],
                "torch": torch.__version__, "diffusers": diffusers.__version__,
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
    if layout != ATTENTION_LAYOUT:
        raise WeightsUnavailableError(
            f"The UNet's attention layout {layout} is not SD1.5's {ATTENTION_LAYOUT}. Fix: use SD1.5-family weights."
        )
