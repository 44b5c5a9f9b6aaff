"""Model definitions and checkpoint loading (no pipeline code here).

Importing this package registers the UniFilter configs and classifiers (`llava_qwen`, `llava_qwen3`) with
transformers' `AutoConfig` / `AutoModelForSequenceClassification`.

Example:
    >>> from mmsieve.models import UniFilterModel
    >>> model = UniFilterModel.from_pretrained("weizhiwang/UniFilter-Qwen3-0.6B")  # doctest: +SKIP
"""

from mmsieve.models.devices import pick_attn_implementation, pick_device, pick_dtype
from mmsieve.models.unifilter import (
    AvgPoolProjector,
    LlavaQwen3Classifier,
    LlavaQwen3Config,
    LlavaQwenClassifier,
    LlavaQwenConfig,
    UniFilterModel,
    register_auto_classes,
)


__all__ = [
    "AvgPoolProjector",
    "LlavaQwen3Classifier",
    "LlavaQwen3Config",
    "LlavaQwenClassifier",
    "LlavaQwenConfig",
    "UniFilterModel",
    "pick_attn_implementation",
    "pick_device",
    "pick_dtype",
    "register_auto_classes",
]
