"""Benchmark of mmsieve.images: draft-mode JPEG decoding vs plain Pillow, and DecodePool vs one thread.

Builds `--n` real JPEGs in memory (scikit-image photos, cropped and upscaled to 2000-4000 px on the
longer side, with film grain so they carry real high-frequency detail, quality 90), then measures on
the same images:
  1. `decode_image(b, size)` (draft path) against `Image.open(...).convert("RGB").resize(...)`:
     the speed ratio and the mean absolute pixel difference of the outputs;
  2. `DecodePool.decode_many` against a single-thread loop of the same `decode_image` calls.
Each timing is the best of `--repeats` runs. The last line printed is one JSON object.

Run:
    python bench/decode.py [--n 200] [--size 384] [--repeats 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import TypeVar

import numpy as np
import skimage.data
from PIL import Image, ImageChops
from timing import best_of

from mmsieve.images import DecodePool, decode_image


PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",  # grayscale, converted to RGB
    "coins",  # grayscale, converted to RGB
)
GRAIN_SIDE = 4000
T = TypeVar("T")


def make_jpeg(base: Image.Image, grain: Image.Image, seed: int) -> bytes:
    """A random crop of `base`, upscaled so its longer side is 2000-4000 px, with grain, as a quality-90 JPEG."""
    rng = np.random.default_rng(seed)
    w, h = base.size
    cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    scale = int(rng.integers(2000, GRAIN_SIDE + 1)) / max(cw, ch)
    size = (round(cw * scale), round(ch * scale))
    im = base.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
    gx, gy = int(rng.integers(0, GRAIN_SIDE - size[0] + 1)), int(rng.integers(0, GRAIN_SIDE - size[1] + 1))
    im = ImageChops.add(im, grain.crop((gx, gy, gx + size[0], gy + size[1])), 1.0, -128)
    buf = BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_corpus(n: int) -> list[bytes]:
    bases = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    grain = Image.effect_noise((GRAIN_SIDE, GRAIN_SIDE), 6).convert("RGB")
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(lambda i: make_jpeg(bases[i % len(bases)], grain, i), range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of JPEGs (default 200)")
    parser.add_argument("--size", type=int, default=384, help="decode to size x size (default 384)")
    parser.add_argument("--repeats", type=int, default=2, help="timing runs, best is kept (default 2)")
    parser.add_argument("--workers", type=int, default=max(2, min(8, os.cpu_count() or 1)), help="DecodePool threads")
    args = parser.parse_args()
    side = args.size

    start = time.perf_counter()
    jpegs = build_corpus(args.n)
    pixels = [Image.open(BytesIO(b)).size for b in jpegs]
    megapixels = np.mean([w * h for w, h in pixels]) / 1e6
    print(
        f"corpus: {len(jpegs)} JPEGs, {megapixels:.1f} MP on average, {sum(map(len, jpegs)) / 1e6:.0f} MB, "
        f"built in {time.perf_counter() - start:.1f} s on {os.cpu_count()} cores"
    )

    def baseline() -> list[Image.Image]:
        return [Image.open(BytesIO(b)).convert("RGB").resize((side, side), Image.Resampling.BICUBIC) for b in jpegs]

    def single_thread() -> list[Image.Image | None]:
        return [decode_image(b, side, resize="exact").image for b in jpegs]

    base_s, base_images = best_of(args.repeats, baseline)
    draft_s, draft_images = best_of(args.repeats, single_thread)
    diffs = [
        np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean()
        for a, b in zip(base_images, draft_images, strict=True)
    ]
    mean_abs_diff = float(np.mean(diffs))
    print(f"baseline Pillow open+convert+resize: {1000 * base_s / len(jpegs):.1f} ms/image")
    print(f"decode_image draft path:             {1000 * draft_s / len(jpegs):.1f} ms/image")
    print(
        f"draft speedup {base_s / draft_s:.2f}x, mean abs pixel difference {mean_abs_diff:.2f} (max {max(diffs):.2f})"
    )

    with DecodePool(args.workers) as pool:
        pool.decode_many(jpegs[:4], size=side)  # start the threads outside the timing
        pool_s, decoded = best_of(args.repeats, lambda: pool.decode_many(jpegs, size=side, resize="exact"))
    assert all(d.ok for d in decoded)
    single_s, _ = best_of(args.repeats, single_thread)
    print(
        f"DecodePool({args.workers}): {len(jpegs) / pool_s:.1f} images/s vs one thread {len(jpegs) / single_s:.1f} "
        f"images/s: {single_s / pool_s:.2f}x (total run {time.perf_counter() - start:.0f} s)"
    )
    result = {
        "draft_speedup": round(base_s / draft_s, 2),
        "mean_abs_diff": round(mean_abs_diff, 3),
        "threadpool_speedup": round(single_s / pool_s, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
