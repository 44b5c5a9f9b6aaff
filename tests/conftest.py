"""Shared fixtures: real photos (scikit-image), real broken image files, and real parquet sources."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def isolated_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test prepares datasets in its own cache. `datasets` 5.2 caches a local folder whose README has
    `configs` by folder name and configs alone, so two tests loading different `repo/` folders (or a demo rerun)
    would otherwise read each other's rows."""
    import datasets.config

    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))  # spawned workers
    for name, value in {
        "HF_DATASETS_CACHE": cache,
        "DOWNLOADED_DATASETS_PATH": cache / "downloads",
        "EXTRACTED_DATASETS_PATH": cache / "downloads" / "extracted",
    }.items():
        monkeypatch.setattr(datasets.config, name, value)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sbatch`, `srun` and `scontrol` stand-ins first on PATH (tests/fake_slurm.py); returns their log file."""
    import fake_slurm

    env, log = fake_slurm.install(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return log


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    from mmsieve.demo.corpus import demo_photos

    return demo_photos()


@pytest.fixture(scope="session")
def broken() -> dict[str, bytes | None]:
    from mmsieve.demo.corpus import broken_images

    return broken_images()


@pytest.fixture(scope="session")
def caption_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two parquet shards in COCO style (`image`, `caption`, `source`) with broken rows."""
    from mmsieve.demo.corpus import build_captions

    return build_captions(tmp_path_factory.mktemp("captions"))


# -- loopback fake Hugging Face Hub (tests/loopback_hub.py) ------------------------------------------------------------

if TYPE_CHECKING:
    from loopback_hub import LoopbackHub

LOOPBACK_TOKEN = "hf_loopbackTOKEN1234567890"


@pytest.fixture(scope="session")
def loopback_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackHub]:
    """The fake Hub server, shared by the session (127.0.0.1, random port, storage in a temp dir)."""
    from loopback_hub import LoopbackHub

    with LoopbackHub(tmp_path_factory.mktemp("loopback_hub")) as server:
        yield server


@pytest.fixture
def hub(loopback_hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LoopbackHub]:
    """Point huggingface_hub and datasets at the fake Hub for one test: online, Xet off, fake token, temp caches.

    Environment variables are set too (not only the module constants), so spawned workers (`num_proc>1`) and
    subprocesses reach the fake Hub. The request log and `tokens_seen` are reset, so they cover this test only.
    Use `hub.new_repo_id("data")` for a repo id no other test uses, `hub.files(...)` / `hub.commits(...)` to check.
    """
    import datasets.config
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import HfFileSystem

    url, home = loopback_hub.url, tmp_path / "hf_home"  # the datasets cache: `isolated_datasets_cache`
    env = {
        "HF_ENDPOINT": url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_TOKEN": LOOPBACK_TOKEN,
        "HF_HOME": str(home),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,  # `utils._runtime.is_xet_available()` reads this at call time
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }.items():
        monkeypatch.setattr(hf_constants, name, value)
    for name in ("AGENT_HARNESSES_PATH", "CHECK_FOR_UPDATE_DONE_PATH", "CHECK_FOR_SKILL_UPDATE_DONE_PATH"):
        if hasattr(hf_constants, name):  # not in every huggingface_hub version
            monkeypatch.setattr(hf_constants, name, str(home / os.path.basename(getattr(hf_constants, name))))
    for name, value in {
        "HF_ENDPOINT": url,
        "HUB_DATASETS_URL": url + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_OFFLINE": False,
        "HF_CACHE_HOME": str(home),
        "HF_MODULES_CACHE": home / "modules",
    }.items():
        monkeypatch.setattr(datasets.config, name, value)
    from huggingface_hub.utils._runtime import is_xet_available

    assert not is_xet_available(), "Xet must be off: the loopback Hub only speaks git-LFS"
    HfFileSystem.clear_instance_cache()  # fsspec caches instances (and their listings) across tests
    loopback_hub.reset_log()
    loopback_hub.upload_delay = 0.0
    yield loopback_hub
    loopback_hub.upload_delay = 0.0
    HfFileSystem.clear_instance_cache()
