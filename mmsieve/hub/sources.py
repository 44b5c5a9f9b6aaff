"""Open a data source as a `datasets.Dataset` whose images stay encoded bytes.

A source is a Hub dataset id (`"HuggingFaceM4/FineVision"`), a local folder or file of parquet /
jsonl shards (a folder with a `data/` subfolder, the Hub repo layout, is read from `data/`), or a
folder written by `Dataset.save_to_disk`. Image columns are cast to
`Image(decode=False)`, so rows carry `{"bytes", "path"}` cells and nothing is decoded until a model
batch needs pixels.

Example:
    >>> ds = open_source("my_shards/", split="train")  # doctest: +SKIP
    >>> ds = open_source("HuggingFaceM4/FineVision", config="ai2d", split="train")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


_LOCAL_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".csv": "csv"}


class SourceError(ValueError):
    """The source cannot be opened; the message says what was tried and what to pass instead."""


def _suffix(path: Path) -> str:
    return ".jsonl.gz" if path.name.endswith(".jsonl.gz") else path.suffix.lower()


def _local_data_files(path: Path) -> tuple[str, list[str]]:
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p) in _LOCAL_BUILDERS)
    )
    builders = {_LOCAL_BUILDERS[_suffix(p)] for p in files if _suffix(p) in _LOCAL_BUILDERS}
    if not builders:
        raise SourceError(f"{path} holds no parquet, jsonl, json or csv files and is not a save_to_disk folder")
    if len(builders) > 1:
        raise SourceError(f"{path} mixes file formats ({', '.join(sorted(builders))}); point --input at one kind")
    return builders.pop(), [str(p) for p in files]


def with_encoded_images(features: Any) -> Any:
    """Return `features` with every `Image` (also inside lists) set to `decode=False`.

    Example:
        >>> from datasets import Features, Image, Value
        >>> with_encoded_images(Features({"image": Image(), "caption": Value("string")}))["image"].decode
        False
    """
    from datasets import Features, Image, LargeList, List

    def fix(feature: Any) -> Any:
        if isinstance(feature, Image):
            return Image(decode=False)
        if isinstance(feature, List):
            return List(fix(feature.feature), length=feature.length)
        if isinstance(feature, LargeList):
            return LargeList(fix(feature.feature))
        if isinstance(feature, dict):
            return {k: fix(v) for k, v in feature.items()}
        return feature

    return Features({k: fix(v) for k, v in features.items()})


def open_source(source: str, *, split: str | None = None, config: str | None = None) -> Any:
    """Open `source` as a `datasets.Dataset` with encoded images.

    Args:
        source: a Hub dataset id, a local parquet/jsonl/json/csv file or folder, or a `save_to_disk` folder.
        split: the split to read (default: `train`, or the only split there is).
        config: the Hub dataset's configuration (subset) name.

    Raises:
        SourceError: the source does not exist, is empty, or the split is unknown.

    Example:
        >>> ds = open_source("data/captions.parquet")  # doctest: +SKIP
        >>> ds.features["image"]  # doctest: +SKIP
        Image(mode=None, decode=False, id=None)
    """
    import datasets

    path = Path(source).expanduser()
    try:
        if path.exists():
            if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
                loaded = datasets.load_from_disk(str(path))
            else:
                if path.is_dir() and (path / "data").is_dir():  # the Hub repo layout: data/ beside README.md etc.
                    path = path / "data"
                builder, files = _local_data_files(path)
                # a folder gets datasets' split inference from file names (train-*, test-*, data/...)
                where = {"data_files": files} if path.is_file() else {"data_dir": str(path)}
                loaded = datasets.load_dataset(builder, **where)
        elif source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise SourceError(f"{source}: no such file or directory")
        else:
            loaded = datasets.load_dataset(source, config, split=split)
    except SourceError:
        raise
    except FileNotFoundError as err:
        raise SourceError(f"{source}: {err}") from None
    except Exception as err:  # datasets raises many types; one clear line is what the user needs
        raise SourceError(
            f"cannot open {source!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) == 1:
            split = next(iter(loaded))
        split = split or "train"
        if split not in loaded:
            raise SourceError(f"{source} has no split {split!r}; it has {', '.join(loaded)} (pass --split)")
        loaded = loaded[split]
    if len(loaded) == 0:
        raise SourceError(f"{source} is empty")
    encoded = with_encoded_images(loaded.features)
    for name, feature in encoded.items():
        if feature != loaded.features[name]:
            loaded = loaded.cast_column(name, feature)  # same arrow storage: no data is rewritten
    return loaded


def fetch_dataset_files(repo_id: str, revision: str | None = None) -> Path:
    """Download the files of a Hub dataset repo (once, into the Hugging Face cache); return the local folder.

    Raises:
        SourceError: the repo cannot be fetched (unknown id, offline without a cached copy).

    Example:
        >>> folder = fetch_dataset_files("my-org/benchmark-index")  # doctest: +SKIP
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision))
    except Exception as err:
        raise SourceError(f"cannot fetch dataset repo {repo_id!r}: {type(err).__name__}: {err}") from None
