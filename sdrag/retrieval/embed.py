"""CLIP embeddings of text and images, batched and L2-normalised, for style retrieval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..images import ImageLike, load_image
from ..models.loading import checked_tokenizer, load
from ..models.plan import Part
from ..models.quiet import quiet_loading


class ClipEmbedder:
    """A CLIP model that maps prompts and images into one cosine space."""

    def __init__(self, part: Part, device: torch.device, dtype: torch.dtype):
        """Load CLIP as `part` plans it (a hub id at a revision, or a folder) onto `device` in `dtype`."""

        def load_all(p: Part):
            # Imported here: without torchvision, transformers warns on first import of the processor.
            from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

            model = CLIPModel.from_pretrained(p.source, dtype=dtype, **p.kwargs())
            return (model, CLIPTokenizer.from_pretrained(p.source, **p.hub_kwargs()),
                    CLIPImageProcessor.from_pretrained(p.source, **p.hub_kwargs()))

        with quiet_loading():
            model, self.tokenizer, self.processor = load(part, load_all)
        self.model = model.to(device).eval()
        checked_tokenizer(self.tokenizer, part.where)
        self.source = part.where
        self.device = device
        self.dtype = dtype
        self.dim = int(self.model.config.projection_dim)

    @torch.inference_mode()
    def embed_text(self, texts: str | Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return float32 unit vectors, one row per text (truncated to CLIP's 77 tokens)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                                   max_length=self.tokenizer.model_max_length, return_tensors="pt")
            out = self.model.get_text_features(**batch.to(self.device))
            rows.append(_pooled(out))
        return _normalise(rows, self.dim)

    @torch.inference_mode()
    def embed_images(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Return float32 unit vectors, one row per image (paths, PIL images or arrays)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        rows = []
        for i in range(0, len(images), batch_size):
            batch = [load_image(img) for img in images[i:i + batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
            rows.append(_pooled(out))
        return _normalise(rows, self.dim)


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected vector; 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _normalise(rows: list[torch.Tensor], dim: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    vecs = torch.cat(rows).float().cpu().numpy()
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return (vecs / np.maximum(norms, 1e-12)).astype(np.float32)
