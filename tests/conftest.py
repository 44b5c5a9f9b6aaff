"""Shared fixtures: real photos (scikit-image), real broken image files, and real parquet sources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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
