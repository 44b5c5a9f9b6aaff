"""Tiny random-weight CLIP, SigLIP and SigLIP2 (NaFlex) dual encoders, built offline for tests and demos.

The architecture, tokenizer and image processor files are the real transformers ones, so the
checkpoints load with `AutoModel` / `AutoTokenizer` / `AutoImageProcessor` exactly like the Hub
models; only the sizes are tiny (32-d, 2 layers, 32x32 images in 8x8 patches, a 300-token BPE
vocabulary trained on a few captions) and the weights random. Building is deterministic for a seed
and does not disturb the global torch random state.

Two details make the tiny models behave like the real ones (see the reference notes):
- the tokenizer adds `<s> ... </s>`: CLIP pools the text at the first eos token, so without it every
  caption would pool at the same position and get the same score;
- bos/eos/pad ids are set in the text config: SigLIP's defaults (49406, 49407) lie outside a tiny vocab.

Example:
    >>> path = build_tiny_clip("/tmp/tiny-clip")  # doctest: +SKIP
    >>> from mmsieve.models.dual_encoder import DualEncoder  # doctest: +SKIP
    >>> encoder = DualEncoder.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmsieve.models.tiny import build_tokenizer


_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 8,
}
IMAGE_SIZE = 32  # the tiny models' input side, in pixels
TEXT_LENGTH = 16  # the tiny models' maximum text length, in tokens


def _tokenizer() -> Any:
    return build_tokenizer(300, wrap=True, max_length=TEXT_LENGTH)  # CLIP pools at the EOS every text must end with


def _text_config(tok: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": TEXT_LENGTH,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }


def _build(path: str | Path, seed: int, make_model: Any, image_processor: Any) -> Path:
    import torch

    out = Path(path)
    tok = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(_text_config(tok))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out


def build_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random CLIP (`CLIPModel`, 16-d embeddings, 32x32 images) to `path`; returns the path.

    Its image processor resizes the shortest edge to 32 then center-crops 32x32, like OpenAI's CLIP.

    Example:
        >>> build_tiny_clip(tmp_path / "clip")  # doctest: +SKIP
        PosixPath('.../clip')
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    def make(text: dict[str, Any]) -> Any:
        return CLIPModel(
            CLIPConfig(text_config=text, vision_config=dict(_VISION, image_size=IMAGE_SIZE), projection_dim=16)
        )

    processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return _build(path, seed, make, processor)


def build_tiny_siglip(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SigLIP (`SiglipModel`, 32-d embeddings, 32x32 images) to `path`; returns the path.

    Its image processor squashes every image to exactly 32x32, like Google's SigLIP.

    Example:
        >>> build_tiny_siglip(tmp_path / "siglip")  # doctest: +SKIP
        PosixPath('.../siglip')
    """
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    def make(text: dict[str, Any]) -> Any:
        vision = dict(_VISION, image_size=IMAGE_SIZE)
        return SiglipModel(SiglipConfig(text_config=dict(text, projection_size=32), vision_config=vision))

    return _build(path, seed, make, SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}))


def build_tiny_siglip2(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SigLIP2 NaFlex (`Siglip2Model`, at most 16 patches of 8x8 at native aspect ratio).

    Example:
        >>> build_tiny_siglip2(tmp_path / "siglip2")  # doctest: +SKIP
        PosixPath('.../siglip2')
    """
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    def make(text: dict[str, Any]) -> Any:
        vision = dict(_VISION, num_patches=16)
        return Siglip2Model(Siglip2Config(text_config=dict(text, projection_size=32), vision_config=vision))

    return _build(path, seed, make, Siglip2ImageProcessor(patch_size=8, max_num_patches=16))


__all__ = ["IMAGE_SIZE", "TEXT_LENGTH", "build_tiny_clip", "build_tiny_siglip", "build_tiny_siglip2"]
