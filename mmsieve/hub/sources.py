"""Open a data source as a `datasets.Dataset` (or, streaming, an `IterableDataset`) whose images stay encoded bytes.

A source is a Hub dataset id (`"HuggingFaceM4/FineVision"`, with a config and split), an `hf://datasets/...` URL
of files, a glob or a folder in a dataset repo (read through fsspec's `HfFileSystem`), a local folder or file of
parquet / jsonl / csv shards or webdataset `.tar` shards (a folder with a `data/` subfolder, the Hub repo layout,
is read from `data/`), or a folder written by `Dataset.save_to_disk`. Image columns are cast to
`Image(decode=False)`, so rows carry `{"bytes", "path"}` cells and nothing is decoded until a model
batch needs pixels.

Example:
    >>> ds = open_source("my_shards/", split="train")  # doctest: +SKIP
    >>> ds = open_source("HuggingFaceM4/FineVision", config="ai2d", split="train")  # doctest: +SKIP
    >>> ds = open_source("hf://datasets/org/captions/data/train-*.parquet", streaming=True)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote


_LOCAL_BUILDERS = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".csv": "csv",
    ".tar": "webdataset",
}
HF_DATASETS_URL = "hf://datasets/"


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
        raise SourceError(
            f"{path} holds no parquet, jsonl, json, csv or webdataset .tar files and is not a save_to_disk folder"
        )
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


def _split_hf_url(source: str) -> tuple[str, str | None, str]:
    """`hf://datasets/ORG/NAME[@REV][/PATH]` -> (`ORG/NAME`, revision, path in the repo); no network.

    Example:
        >>> _split_hf_url("hf://datasets/org/caps@v1.0/data/*.parquet")
        ('org/caps', 'v1.0', 'data/*.parquet')
    """
    if not source.startswith(HF_DATASETS_URL):
        raise SourceError(f"{source}: only dataset repos can be read by URL: hf://datasets/ORG/NAME[@REV][/PATH]")
    parts = source[len(HF_DATASETS_URL) :].strip("/").split("/", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise SourceError(f"{source}: expected hf://datasets/ORG/NAME[@REV][/PATH]")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", unquote(revision) or None, parts[2] if len(parts) == 3 else ""


def _load(source: str, split: str | None, config: str | None, streaming: bool) -> Any:
    """`datasets.load_dataset` (or `load_from_disk`) for any accepted source; a Dataset(Dict) or IterableDataset(Dict)."""
    import datasets

    if source.startswith("hf://"):
        repo_id, revision, path = _split_hf_url(source)
        suffix = _suffix(Path(path.rstrip("*/") or "."))
        if suffix in _LOCAL_BUILDERS:  # files or a glob: hf://datasets/org/name/data/*.parquet
            return datasets.load_dataset(_LOCAL_BUILDERS[suffix], data_files=source, streaming=streaming)
        if any(c in path for c in "*?["):
            raise SourceError(f"{source}: end a glob with the files' extension, e.g. data/*.parquet")
        # the repo or a folder of it: the Hub's own split inference (train-*, test-*) and builder choice
        return datasets.load_dataset(
            repo_id, config, data_dir=path or None, revision=revision, split=split, streaming=streaming
        )
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            return datasets.load_from_disk(str(path))
        if path.is_dir() and (path / "data").is_dir():  # the Hub repo layout: data/ beside README.md etc.
            path = path / "data"
        builder, files = _local_data_files(path)
        # a folder gets datasets' split inference from file names (train-*, test-*, data/...)
        where = {"data_files": files} if path.is_file() else {"data_dir": str(path)}
        return datasets.load_dataset(builder, **where, streaming=streaming)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise SourceError(f"{source}: no such file or directory")
    return datasets.load_dataset(source, config, split=split, streaming=streaming)


def open_source(source: str, *, split: str | None = None, config: str | None = None, streaming: bool = False) -> Any:
    """Open `source` as a `datasets.Dataset` (or, streaming, an `IterableDataset`) with encoded images.

    Args:
        source: a Hub dataset id; an `hf://datasets/ORG/NAME[@REV]/PATH` URL of files, a glob or a folder; a local
            parquet/jsonl/json/csv file or folder, or webdataset `.tar` shards; or a `save_to_disk` folder.
        split: the split to read (default: `train`, or the only split there is).
        config: the Hub dataset's configuration (subset) name.
        streaming: read rows as they are needed instead of downloading and preparing the dataset first. The
            result is an `IterableDataset` whose shards (`n_shards`) are the source's files.

    Raises:
        SourceError: the source does not exist, is empty, or the split is unknown.

    Example:
        >>> ds = open_source("data/captions.parquet")  # doctest: +SKIP
        >>> ds.features["image"]  # doctest: +SKIP
        Image(mode=None, decode=False, id=None)
        >>> stream = open_source("HuggingFaceM4/FineVision", config="ai2d_merged", streaming=True)  # doctest: +SKIP
        >>> next(iter(stream))["images"][0].keys()  # doctest: +SKIP
        dict_keys(['bytes', 'path'])
    """
    import datasets

    try:
        loaded = _load(source, split, config, streaming)
        if isinstance(loaded, datasets.DatasetDict | datasets.IterableDatasetDict):
            if split is None and len(loaded) == 1:
                split = next(iter(loaded))
            split = split or "train"
            if split not in loaded:
                raise SourceError(f"{source} has no split {split!r}; it has {', '.join(loaded)} (pass --split)")
            loaded = loaded[split]
        if streaming and isinstance(loaded, datasets.Dataset):  # a save_to_disk folder: one shard per arrow file
            loaded = loaded.to_iterable_dataset(num_shards=max(1, len(loaded.cache_files)))
        if isinstance(loaded, datasets.IterableDataset) and loaded.features is None:
            loaded = loaded._resolve_features()  # json streams: the types of the first rows
    except SourceError:
        raise
    except FileNotFoundError as err:
        raise SourceError(f"{source}: {err}") from None
    except Exception as err:  # datasets raises many types; one clear line is what the user needs
        raise SourceError(
            f"cannot open {source!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if isinstance(loaded, datasets.Dataset) and len(loaded) == 0:
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
