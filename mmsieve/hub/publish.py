"""Publishing to the Hub: a curated run as a dataset repo, a checkpoint as a model repo; one commit each.

- `push_dataset(run_dir, repo_id)`: builds the repo layout (`build_dataset_repo`: parquet shards with `Image`
  features, the dataset card, score histograms) in a temporary folder and pushes it.
- `push_model(model_dir, repo_id)`: the safetensors checkpoint with its tokenizer, processor and model card.
- `push_folder(folder, repo_id)`: the shared mechanism. One commit per publish. Files that did not change are not
  re-uploaded, and an identical re-publish makes no commit at all. mmsieve records what it published in
  `.mmsieve/manifest.json`; a later publish deletes only files that an earlier mmsieve publish created and that
  are gone now. Files that someone else put in the repo stay unless `replace=True`.

The token comes from the standard places (`HF_TOKEN`, then the `hf auth login` cache) unless given. It is never
printed, and every error raised here has it removed from its message.

Example:
    >>> push_dataset("curated/", "me/my-curated-captions", include_removed=True)  # doctest: +SKIP
    {'repo': 'datasets/me/my-curated-captions', 'commit': '3f2c...', 'files': 7, 'url': 'https://huggingface.co/...'}
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal


MANIFEST = ".mmsieve/manifest.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # never published: safetensors only
SKIPPED_PARTS = ("checkpoint-", "optimizer", "scheduler", "rng_state", "trainer_state", "training_args")


class PublishError(RuntimeError):
    """A publish failed; the message never contains the token."""


def scrub(text: str, token: str | None) -> str:
    """`text` with the token (and any `hf_...` token-shaped string) replaced by `***`.

    Example:
        >>> scrub("401 for token hf_abcdefghijklmnopqrstuvwx", None)
        '401 for token ***'
    """
    import re

    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{16,}", "***", text)


def _token(token: str | None) -> str | None:
    if token is not None:
        return token
    from huggingface_hub import get_token

    return get_token()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _previous_manifest(api: Any, repo_id: str, repo_type: str) -> set[str]:
    from huggingface_hub.utils import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, MANIFEST, repo_type=repo_type)
    except EntryNotFoundError:
        return set()
    try:
        return set(json.loads(Path(path).read_text())["files"])
    except (ValueError, KeyError, TypeError):
        return set()


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: Literal["dataset", "model"] = "dataset",
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Publish with mmsieve",
    replace: bool = False,
    exclude: Iterable[str] = (),
) -> dict[str, Any]:
    """Push every file of `folder` to `repo_id` in one commit (creating the repo, private if asked).

    Args:
        exclude: relative paths of `folder` not to publish.
        replace: also delete repo files that mmsieve did not publish (never `.gitattributes`).

    Returns:
        `{"repo", "url", "commit", "files", "deleted", "changed"}`; `changed` is False when nothing differed.

    Example:
        >>> push_folder("bench_output/easyvqa/model", "me/unifilter-easyvqa", repo_type="model")  # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    token = _token(token)
    skip = set(exclude)
    files = [f for f in _files(folder) if f not in skip and f != MANIFEST]
    if not files:
        raise PublishError(f"nothing to publish in {folder}")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        previous = _previous_manifest(api, repo_id, repo_type)
        if replace:
            previous |= set(api.list_repo_files(repo_id, repo_type=repo_type)) - {".gitattributes"}
        stale = sorted(previous - set(files) - {MANIFEST})
        manifest = json.dumps({"files": files, "tool": "mmsieve"}, indent=1, sort_keys=True).encode() + b"\n"
        operations: list[Any] = [CommitOperationAdd(f, str(folder / f)) for f in files]
        operations.append(CommitOperationAdd(MANIFEST, manifest))
        operations += [CommitOperationDelete(f) for f in stale]
        before = api.repo_info(repo_id, repo_type=repo_type).sha
        info = api.create_commit(repo_id, operations, repo_type=repo_type, commit_message=commit_message)
    except Exception as err:  # any failure: re-raised without the token, with the cause's type
        raise PublishError(f"publishing to {repo_id} failed: {type(err).__name__}: {scrub(str(err), token)}") from None
    commit = getattr(info, "oid", None) or before
    return {
        "repo": f"{repo_type}s/{repo_id}",
        "url": str(url),
        "commit": commit,
        "files": len(files),
        "deleted": stale,
        "changed": commit != before,
    }


def push_dataset(
    run_dir: str | Path,
    repo_id: str,
    *,
    include_removed: bool = False,
    token: str | None = None,
    private: bool = False,
    license: str | None = None,
    source_datasets: list[str] | None = None,
    pretty_name: str | None = None,
    replace: bool = False,
    max_shard_bytes: int = 256 * 2**20,
) -> dict[str, Any]:
    """Publish a run folder (`kept/`, `removed/`, `stats.json`) as a Hub dataset with its card and plots.

    An interrupted publish leaves no commit behind; publishing again uploads only the shards the Hub does not
    have yet (git-LFS answers for each object whether it is stored), then makes the one commit.
    `max_shard_bytes` bounds each parquet file (see `build_dataset_repo`).

    Example:
        >>> push_dataset("curated/", "me/curated-captions", private=True)  # doctest: +SKIP
    """
    from mmsieve.hub.dataset_repo import build_dataset_repo

    with tempfile.TemporaryDirectory(prefix="mmsieve-publish-") as tmp:
        repo_dir = build_dataset_repo(
            run_dir,
            Path(tmp) / "repo",
            include_removed=include_removed,
            license=license,
            source_datasets=source_datasets,
            pretty_name=pretty_name,
            repo_id=repo_id,
            max_shard_bytes=max_shard_bytes,
        )
        return push_folder(
            repo_dir,
            repo_id,
            repo_type="dataset",
            token=token,
            private=private,
            commit_message="Publish a curated dataset with mmsieve",
            replace=replace,
        )


def model_files(model_dir: str | Path) -> tuple[list[str], list[str]]:
    """The files of a checkpoint folder to publish, and those left out (pickled weights, trainer state).

    Raises:
        PublishError: no `*.safetensors` weights, or no model card (`README.md`).

    Example:
        >>> model_files("bench_output/easyvqa/model")  # doctest: +SKIP
        (['README.md', 'config.json', 'model.safetensors', ...], ['training_args.bin'])
    """
    folder = Path(model_dir)
    keep, left_out = [], []
    for name in _files(folder):
        if name.endswith(PICKLE_SUFFIXES) or any(part.startswith(SKIPPED_PARTS) for part in name.split("/")):
            left_out.append(name)
        else:
            keep.append(name)
    if not any(name.endswith(".safetensors") for name in keep):
        raise PublishError(f"{folder} has no *.safetensors weights: mmsieve publishes safetensors only")
    if "README.md" not in keep:
        raise PublishError(f"{folder} has no model card (README.md): `mmsieve eval --model {folder}` writes one")
    return keep, left_out


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    replace: bool = False,
) -> dict[str, Any]:
    """Publish a checkpoint folder (safetensors, config, tokenizer, processor, model card) as a Hub model.

    Example:
        >>> push_model("bench_output/easyvqa/model", "me/unifilter-easyvqa")  # doctest: +SKIP
    """
    keep, left_out = model_files(model_dir)
    report = push_folder(
        model_dir,
        repo_id,
        repo_type="model",
        token=token,
        private=private,
        commit_message="Publish a checkpoint with mmsieve",
        replace=replace,
        exclude=left_out,
    )
    return {**report, "left_out": left_out}


__all__ = ["MANIFEST", "PublishError", "model_files", "push_dataset", "push_folder", "push_model", "scrub"]
