import numpy as np
import pytest
import torch
from PIL import Image

from sdrag.models.plan import plan
from sdrag.models.presets import get_spec
from sdrag.retrieval.embed import ClipEmbedder


@pytest.fixture(scope="module")
def embedder():
    return ClipEmbedder(plan(get_spec("tiny"))["clip"], torch.device("cpu"), torch.float32)


def test_text_vectors_are_unit_length_and_batched_consistently(embedder):
    texts = [f"style number {i}" for i in range(7)]
    together = embedder.embed_text(texts, batch_size=64)
    in_pieces = embedder.embed_text(texts, batch_size=3)
    assert together.shape == (7, embedder.dim) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, in_pieces, atol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_image_vectors_accept_mixed_inputs(embedder, tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (50, 30), "green").save(path)
    vecs = embedder.embed_images([path, Image.new("RGB", (10, 10), "red"), np.zeros((8, 8, 3), np.uint8)],
                                 batch_size=2)
    assert vecs.shape == (3, embedder.dim)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    same = embedder.embed_images(Image.new("RGB", (10, 10), "red"))
    assert np.allclose(same[0], vecs[1], atol=1e-5)


def test_long_prompts_are_truncated_not_fatal(embedder):
    assert embedder.embed_text("neon " * 500).shape == (1, embedder.dim)
    assert embedder.embed_text([]).shape == (0, embedder.dim)


def test_dtype_is_honoured():
    half = ClipEmbedder(plan(get_spec("tiny"), torch.bfloat16)["clip"], torch.device("cpu"), torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert half.embed_text("x").dtype == np.float32
