"""SSCD, Meta's self-supervised copy-detection descriptor (Pizzi et al., CVPR 2022), in plain torch.

A ResNet-50 trunk, GeM pooling (p = 3), a Linear(2048 -> 512) and L2 normalisation: a dot product of two outputs is
their cosine similarity. FineVision embeds images with `sscd_disc_mixup` and calls duplicates at cosine >= 0.95.

Parameter names, checked against facebookresearch/sscd-copy-detection `sscd/models/model.py` and
`sscd/models/gem_pooling.py` (commit 550e40c) and ClassyVision `classy_vision/models/resnext.py` /
`classy_block.py`:
- `Model(backbone, dims, pool_param)` holds two children, `backbone` and `embeddings`.
- Torchvision backbones (`TV_RESNET50`, the `.torchvision.pt` files): `backbone` is torchvision's `resnet50(
  num_classes=dims)` with `backbone.avgpool = GlobalGeMPool2d(pool_param)`, and `embeddings = L2Norm()`. Keys:
  `backbone.conv1.weight`, `backbone.bn1.*`, `backbone.layer{1-4}.{i}.conv{1,2,3}.weight`, `.bn{1,2,3}.*`,
  `.downsample.{0,1}.*`, `backbone.fc.weight/bias` (the 2048 -> 512 projection). mmsieve uses exactly this layout,
  so `Model("TV_RESNET50", 512, 3.0).load_state_dict(safetensors.torch.load_file(...))` loads our files strictly.
- Classy Vision backbones (`CV_RESNET50`, how the models were trained, the `.classy.pt` files): `embeddings =
  Sequential(GlobalGeMPool2d, Linear(2048, dims), L2Norm)`. Keys: `backbone.initial_block._module.{0,1}.*`,
  `backbone.blocks.{stage}.{i}._module.convolutional_block.{0,1,3,4,6}.*`, `._module.bn.*`,
  `._module.downsample.{0,1}.*`, `embeddings.1.weight/bias`. The architecture is the same (stride on the 3x3 conv,
  a downsample when the stride or the width changes); `SSCDModel.from_state_dict` renames these keys.
- `GlobalGeMPool2d` keeps p as a plain float attribute (`pooling_param`), not a parameter: neither layout has a `p`
  key, so p is stored in config.json (a learnable `p` would make the official loader reject our files).
Not verified (no copy could be opened offline): which of the two layouts the official `.torchscript.pt` files hold;
`from_torchscript` accepts both and reads p from the scripted module's `pooling_param` when present.

Example:
    >>> model = SSCDModel.from_torchscript("sscd_disc_mixup.torchscript.pt")  # doctest: +SKIP
    >>> model.save_pretrained("sscd_disc_mixup")  # config.json + model.safetensors  # doctest: +SKIP
    >>> embeddings = load_sscd("sscd_disc_mixup")(pixel_values)  # [B, 512], unit norm  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt"
CACHE_ENV = "MMSIEVE_CACHE"  # overrides the cache root ~/.cache/mmsieve

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
_NOT_PICKLE = (
    "mmsieve loads SSCD weights from TorchScript or safetensors only and never unpickles: use the official "
    ".torchscript.pt, or convert it once with SSCDModel.from_torchscript(path).save_pretrained(folder)"
)


@dataclass
class SSCDConfig:
    """The shape of an SSCD model; the defaults are `sscd_disc_mixup` (ResNet-50, 512-d).

    Args:
        layers: bottleneck blocks per stage (ResNet-50: (3, 4, 6, 3)).
        width: channels of the stem and of the first stage's bottlenecks (64); the trunk ends with 32 * width.
        embedding_dim: output dimension (512; `sscd_disc_large` has 1024).
        gem_p: the GeM pooling exponent (3.0, fixed).
        groups / width_per_group: ResNeXt grouping of the 3x3 convs (ResNet: 1 / 64; `sscd_disc_large`: 32 / 4).
        preprocessing: the resize the checkpoint expects: "square320" (FineVision) or "short288" (DISC eval).

    Example:
        >>> SSCDConfig(layers=(1, 1, 1, 1), width=8, embedding_dim=32).groups
        1
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    embedding_dim: int = 512
    gem_p: float = 3.0
    groups: int = 1
    width_per_group: int = 64
    preprocessing: str = "square320"

    def __post_init__(self) -> None:
        self.layers = tuple(int(n) for n in self.layers)
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {self.layers}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SSCDConfig:
        """The config from a config.json dict; unknown keys (e.g. "model_type") are ignored."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: 1x1 reduce, 3x3 (strided, grouped), 1x1 expand, plus the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, groups: int, width_per_group: int) -> None:
        super().__init__()
        mid = int(planes * width_per_group / 64) * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))  # [B, mid, H/stride, W/stride]
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class GlobalGeMPool2d(nn.Module):
    """Generalised mean pooling over all positions: (mean x^p)^(1/p), p fixed (SSCD's `GlobalGeMPool2d`)."""

    def __init__(self, pooling_param: float) -> None:
        super().__init__()
        self.pooling_param = float(pooling_param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.clamp(min=1e-6).pow(self.pooling_param).mean(dim=(2, 3))  # [B, C, H, W] -> [B, C]
        return mean.pow(1.0 / self.pooling_param)


class L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x)


class ResNetTrunk(nn.Module):
    """torchvision's ResNet with GeM as `avgpool` and `fc` projecting to the embedding, as SSCD's `TV_RESNET50`."""

    def __init__(self, config: SSCDConfig) -> None:
        super().__init__()
        width = config.width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        stages = []
        for index, blocks in enumerate(config.layers):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            stage = []
            for i in range(blocks):
                stage.append(
                    Bottleneck(channels, planes, stride if i == 0 else 1, config.groups, config.width_per_group)
                )
                channels = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = GlobalGeMPool2d(config.gem_p)
        self.fc = nn.Linear(channels, config.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 3, H, W] -> [B, width, H/4, W/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 32 * width, H/32, W/32]
        return self.fc(self.avgpool(x))  # [B, 32 * width] -> [B, D]


class SSCDModel(nn.Module):
    """The SSCD descriptor: `forward(pixel_values [B, 3, H, W]) -> [B, D]`, L2-normalised.

    Inputs are RGB in [0, 1] normalised with ImageNet mean/std; any size works (GeM pools globally).

    Example:
        >>> model = SSCDModel(SSCDConfig(layers=(1, 1, 1, 1), width=8, embedding_dim=32)).eval()
        >>> model(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 32])
    """

    def __init__(self, config: SSCDConfig | None = None) -> None:
        super().__init__()
        self.config = config or SSCDConfig()
        self.backbone = ResNetTrunk(self.config)
        self.embeddings = L2Norm()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.embeddings(self.backbone(pixel_values))

    def save_pretrained(self, path: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` (official torchvision-layout key names) to `path`.

        Example:
            >>> SSCDModel().save_pretrained(tmp_path / "sscd")  # doctest: +SKIP
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"model_type": "sscd", **asdict(self.config)}, indent=2) + "\n")
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        return path

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, revision: str | None = None) -> SSCDModel:
        """Load a folder or Hub repo with `config.json` + `*.safetensors` (on the CPU, in eval mode).

        Raises:
            ValueError: no safetensors weights there (pickle-only checkpoints are refused).

        Example:
            >>> model = SSCDModel.from_pretrained("my-org/sscd-disc-mixup")  # doctest: +SKIP
        """
        from safetensors.torch import load_file

        path = Path(name_or_path)
        if path.is_file():
            raise ValueError(f"{path} is a file; from_pretrained wants a folder (a .torchscript.pt: from_torchscript)")
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            allow = ["config.json", "*.safetensors"]
            path = Path(snapshot_download(str(name_or_path), revision=revision, allow_patterns=allow))
        weights = sorted(path.glob("*.safetensors"))
        if not (path / "config.json").is_file() or not weights:
            raise ValueError(f"{name_or_path} has no config.json + *.safetensors: {_NOT_PICKLE}")
        config = SSCDConfig.from_dict(json.loads((path / "config.json").read_text()))
        state: dict[str, torch.Tensor] = {}
        for file in weights:
            state.update(load_file(str(file)))
        model = cls(config)
        model.load_state_dict(to_torchvision_names(state))
        return model.eval()

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], *, gem_p: float = 3.0, preprocessing: str = "square320"
    ) -> SSCDModel:
        """Build the model a state dict describes (torchvision or Classy Vision key names) and load it strictly.

        Example:
            >>> model = SSCDModel.from_state_dict(torch.jit.load(path).state_dict())  # doctest: +SKIP
        """
        state = to_torchvision_names(state)
        model = cls(_infer_config(state, gem_p, preprocessing))
        model.load_state_dict(state)
        return model.eval()

    @classmethod
    def from_torchscript(cls, path: str | Path) -> SSCDModel:
        """Copy the weights of an official `.torchscript.pt` into an `SSCDModel` (to save them as safetensors).

        Example:
            >>> SSCDModel.from_torchscript("sscd_disc_mixup.torchscript.pt").save_pretrained("out")  # doctest: +SKIP
        """
        scripted = _load_torchscript(Path(path))
        state = {name: tensor.detach().clone() for name, tensor in scripted.state_dict().items()}
        return cls.from_state_dict(state, gem_p=_gem_p(scripted))


_CV_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.(\d+)\._module\.(.+)\.([a-z_]+)$")
_CV_BLOCK_PARTS = {
    "convolutional_block.0": "conv1",
    "convolutional_block.1": "bn1",
    "convolutional_block.3": "conv2",
    "convolutional_block.4": "bn2",
    "convolutional_block.6": "conv3",
    "bn": "bn3",
}  # downsample.{0,1} keep their names
_CV_RENAMES = {
    "backbone.initial_block._module.0.": "backbone.conv1.",
    "backbone.initial_block._module.1.": "backbone.bn1.",
    "embeddings.1.": "backbone.fc.",
}


def to_torchvision_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with SSCD's Classy Vision key names renamed to the torchvision ones (others pass unchanged).

    Example:
        >>> list(to_torchvision_names({"embeddings.1.weight": torch.zeros(1)}))
        ['backbone.fc.weight']
    """
    renamed = {}
    for name, tensor in state.items():
        if match := _CV_BLOCK.match(name):
            stage, block, part, leaf = match.groups()
            name = f"backbone.layer{int(stage) + 1}.{block}.{_CV_BLOCK_PARTS.get(part, part)}.{leaf}"
        for old, new in _CV_RENAMES.items():
            if name.startswith(old):
                name = new + name[len(old) :]
        renamed[name] = tensor
    return renamed


def _infer_config(state: dict[str, torch.Tensor], gem_p: float, preprocessing: str) -> SSCDConfig:
    """The architecture of a torchvision-layout SSCD state dict, read from its tensor shapes."""
    try:
        width = state["backbone.conv1.weight"].shape[0]
        mid, mid_per_group = state["backbone.layer1.0.conv2.weight"].shape[:2]
        layers = tuple(
            1 + max(int(key.split(".")[2]) for key in state if key.startswith(f"backbone.layer{stage}."))
            for stage in range(1, 5)
        )
        embedding_dim = state["backbone.fc.weight"].shape[0]
    except (KeyError, ValueError) as e:
        some = ", ".join(sorted(state)[:4])
        raise ValueError(f"not an SSCD ResNet state dict (missing {e}; keys start: {some}, ...)") from None
    groups = mid // mid_per_group
    return SSCDConfig(
        layers=layers,
        width=width,
        embedding_dim=embedding_dim,
        gem_p=gem_p,
        groups=groups,
        width_per_group=mid * 64 // (width * groups),
        preprocessing=preprocessing,
    )


def _gem_p(scripted: torch.nn.Module) -> float:
    """The GeM exponent stored in a scripted SSCD model (`pooling_param`); 3.0, SSCD's value, when not found."""
    for _, module in scripted.named_modules():
        value = getattr(module, "pooling_param", None)
        if isinstance(value, int | float):
            return float(value)
    logger.warning("no GeM pooling_param found in the TorchScript model; assuming SSCD's p = 3.0")
    return 3.0


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise FileNotFoundError(f"no SSCD TorchScript file at {path}")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as e:
        raise ValueError(f"{path} is not a TorchScript archive ({str(e).splitlines()[0]}); {_NOT_PICKLE}") from None


def download(url: str, cache_dir: str | Path | None = None) -> Path:
    """Fetch `url` once into `<cache>/sscd/<filename>`, where the cache is `cache_dir`, else $MMSIEVE_CACHE, else
    ~/.cache/mmsieve. The file is written under a temporary name, then renamed.

    Example:
        >>> download(OFFICIAL_URL)  # ~/.cache/mmsieve/sscd/sscd_disc_mixup.torchscript.pt  # doctest: +SKIP
    """
    filename = Path(urllib.parse.urlparse(url).path).name
    if not filename:
        raise ValueError(f"{url} does not end with a file name")
    root = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmsieve").expanduser()
    target = root / "sscd" / filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(partial, target)  # atomic: concurrent workers never read a half-written file
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def load_sscd(spec: str | Path, device: Any = None, *, cache_dir: str | Path | None = None) -> torch.nn.Module:
    """An SSCD model in eval mode on `device` (default: `pick_device()`), from any of its distributions.

    Args:
        spec: a `.torchscript.pt` file (kept as the scripted module, as FineVision ran it); an http(s) URL to one
            (downloaded once, see `download`); a safetensors folder or Hub id (`SSCDModel.from_pretrained`).
        device: a torch device.
        cache_dir: the download cache root (default $MMSIEVE_CACHE or ~/.cache/mmsieve).

    Example:
        >>> model = load_sscd(OFFICIAL_URL, device="cpu")  # doctest: +SKIP
        >>> model(pixel_values).shape  # [B, 512]  # doctest: +SKIP
    """
    from mmsieve.models.devices import pick_device

    device = torch.device(device) if device is not None else pick_device()
    text = str(spec)
    path = Path(text).expanduser()
    if text.startswith(("http://", "https://")):
        model: torch.nn.Module = _load_torchscript(download(text, cache_dir))
    elif path.is_file() and path.suffix == ".safetensors":
        model = SSCDModel.from_pretrained(path.parent)
    elif path.is_file():
        model = _load_torchscript(path)
    elif not path.exists() and (path.suffix in _PICKLE_SUFFIXES or path.is_absolute() or text.startswith((".", "~"))):
        raise FileNotFoundError(f"no SSCD checkpoint at {text}")
    else:
        model = SSCDModel.from_pretrained(text)
    return model.to(device).eval()


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFICIAL_URL",
    "SSCDConfig",
    "SSCDModel",
    "download",
    "load_sscd",
    "to_torchvision_names",
]
