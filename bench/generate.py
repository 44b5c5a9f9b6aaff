"""Benchmark of the generation backends: the HTTP client against a loopback server, and in-process batching.

Part 1: `OpenAIBackend` against a `ScriptedChatServer` in a child process (its own interpreter and GIL, as a real
inference server would be) that spends `--delay` s on each request with at most `--slots` served at once: a
throughput limit of slots / delay requests/s (`server_limit_rps`). Each request carries one JPEG (a scikit-image
photo, 512 px on the longer side, base64 in the JSON body) and asks for at most 64 tokens. Measured: requests/s at
client concurrency 1, 8, 32 and 128 (ideal: min(concurrency, slots) / delay; about `--seconds` s of requests per
level, after a warm-up round that opens the connections) and the client's CPU time per request (this process holds
the client only). The client ceiling: the same requests against a second server in the child with no delay and
no slot limit, at concurrency 32: the most the client and a trivial server reach together on this machine.
Part 2: `TransformersBackend` with the tiny random LLaVA of `build_tiny_llava` (32 px images, 1-layer Qwen2):
`--inprocess-n` requests with an image each, at most `--max-new-tokens` new tokens, batch_size 1 vs 16, best of
`--repeats` runs after a warm-up: the throughput ratio (`inprocess_batched_over_bs1`).
The last line printed is one JSON object.

Run:
    HF_HUB_OFFLINE=1 python bench/generate.py [--delay 0.2] [--slots 64] [--seconds 6] [--inprocess-n 64]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from timing import best_of

from mmsieve.generation import ChatRequest, OpenAIBackend, TransformersBackend
from mmsieve.generation.loopback import ScriptedChatServer


CONCURRENCY = (1, 8, 32, 128)
CAPTION = "A red double-decker bus waits at a stop on a busy street while people with umbrellas cross in the rain."
CEILING_CONCURRENCY = 32
CEILING_SECONDS = 3.0


def _reply(body: dict) -> str:
    return CAPTION


def _serve(delay: float, slots: int, conn: Connection) -> None:
    """Child process: the limited server and an unlimited one; their URLs go to the parent, then wait for 'stop'."""
    with (
        ScriptedChatServer(_reply, delay=delay, max_concurrency=slots) as limited,
        ScriptedChatServer(_reply) as unlimited,
    ):
        conn.send((limited.url, unlimited.url))
        conn.recv()


def photo_jpeg(data: bytes, side: int) -> bytes:
    """An encoded photo resized to `side` px on the longer side, JPEG quality 90."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def requests(n: int, image: bytes, tag: str) -> list[ChatRequest]:
    """`n` distinct rewrite requests with the same image."""
    return [
        ChatRequest(f"{tag}/{i}", "You rewrite captions.", f"Rewrite caption {i}.", [image], max_tokens=64)
        for i in range(n)
    ]


def run_level(url: str, concurrency: int, n: int, image: bytes) -> dict[str, float]:
    """Requests/s and client CPU ms per request of `n` requests at `concurrency`, after a warm-up round."""
    backend = OpenAIBackend(url, "scripted", concurrency=concurrency, timeout=30.0, retries=0)
    list(backend.generate(requests(concurrency, image, "warm")))
    wall, cpu = time.perf_counter(), time.process_time()
    errors = [e for _, _, e in backend.generate(requests(n, image, f"c{concurrency}")) if e is not None]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    backend.close()
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} requests failed, e.g. {errors[0]}")
    return {"rps": n / wall, "seconds": wall, "cpu_ms": 1000 * cpu / n}


def http_part(delay: float, slots: int, seconds: float) -> tuple[dict[int, float], float]:
    """Part 1: requests/s per client concurrency against the limited server; prints the table."""
    limit = slots / delay
    from mmsieve.demo.corpus import demo_photos

    image = photo_jpeg(demo_photos()["astronaut"], 512)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=_serve, args=(delay, slots, child), daemon=True)
    server.start()
    try:
        limited_url, unlimited_url = parent.recv()
        print(f"\n(1) OpenAIBackend vs ScriptedChatServer (child process): delay {delay} s, {slots} slots")
        print(f"    server limit {limit:.0f} requests/s; each request carries a {len(image) / 1024:.0f} KB JPEG")
        print(
            f"{'concurrency':>11} {'requests':>9} {'s':>6} {'req/s':>8} {'ideal':>7} {'of ideal':>9} {'client CPU':>11}"
        )
        rps: dict[int, float] = {}
        for c in CONCURRENCY:
            ideal = min(c, slots) / delay
            n = max(16, round(ideal * seconds))
            m = run_level(limited_url, c, n, image)
            rps[c] = m["rps"]
            print(
                f"{c:>11} {n:>9} {m['seconds']:>6.1f} {m['rps']:>8.1f} {ideal:>7.0f} {m['rps'] / ideal:>8.1%} "
                f"{m['cpu_ms']:>8.2f} ms"
            )
        probe = run_level(unlimited_url, CEILING_CONCURRENCY, 200, image)
        n = max(200, round(probe["rps"] * CEILING_SECONDS))
        m = run_level(unlimited_url, CEILING_CONCURRENCY, n, image)
        print(
            f"client ceiling (no delay, no slot limit, concurrency {CEILING_CONCURRENCY}): {m['rps']:.0f} requests/s, "
            f"{m['cpu_ms']:.2f} ms client CPU per request -> one core serves ~{1000 / m['cpu_ms']:.0f} requests/s"
        )
        print(f"at 128: {rps[128]:.1f} requests/s = {rps[128] / limit:.1%} of the server's limit")
    finally:
        parent.send("stop")
        server.join(10)
    return rps, limit


def inprocess_part(n: int, max_new_tokens: int, repeats: int) -> float:
    """Part 2: TransformersBackend batch_size 16 over batch_size 1 on the tiny LLaVA; prints both rates."""
    import transformers

    from mmsieve.demo.corpus import demo_photos
    from mmsieve.models.tiny import build_tiny_llava

    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()

    # thumbnails: with a model this small, decoding full-size photos would take most of the time
    photos = [photo_jpeg(data, 128) for _, data in sorted(demo_photos().items())]
    batch = [
        ChatRequest(
            f"r{i}", "", f"Rewrite this caption in {5 + i % 7} words: a photo number {i}.", [photos[i % len(photos)]]
        )
        for i in range(n)
    ]
    print(f"\n(2) TransformersBackend, tiny random LLaVA, {n} requests with an image, max_new_tokens {max_new_tokens}")
    print(f"{'batch_size':>10} {'s':>7} {'req/s':>8}")
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_llava(Path(tmp) / "llava")
        for batch_size in (1, 16):
            backend = TransformersBackend(path, batch_size=batch_size, max_new_tokens=max_new_tokens, device="cpu")
            list(backend.generate(batch[:batch_size]))  # load and warm up
            seconds, replies = best_of(repeats, lambda b=backend: list(b.generate(batch)))
            if errors := [e for _, _, e in replies if e is not None]:
                raise RuntimeError(f"{len(errors)} of {n} requests failed, e.g. {errors[0]}")
            rates[batch_size] = n / seconds
            print(f"{batch_size:>10} {seconds:>7.2f} {n / seconds:>8.1f}")
    ratio = rates[16] / rates[1]
    print(f"batched (16) over batch size 1: {ratio:.2f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2, help="server seconds per request (default 0.2)")
    parser.add_argument("--slots", type=int, default=64, help="requests the server serves at once (default 64)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of requests per level (default 6)")
    parser.add_argument("--inprocess-n", type=int, default=64, help="in-process requests (default 64)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="in-process new tokens (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="in-process timing runs, best kept (default 3)")
    args = parser.parse_args()
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"  # loopback traffic stays direct
    start = time.perf_counter()
    rps, limit = http_part(args.delay, args.slots, args.seconds)
    ratio = inprocess_part(args.inprocess_n, args.max_new_tokens, args.repeats)
    print(f"\ntotal run {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")
    result = {
        "rps_by_concurrency": {str(c): round(r, 1) for c, r in rps.items()},
        "server_limit_rps": round(limit, 1),
        "inprocess_batched_over_bs1": round(ratio, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
