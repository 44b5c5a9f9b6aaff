"""Scale-out and resilience: executors from the CLI, GPU slots, resume after SIGKILL, interrupted publishes, Ray.

Runs are real: the CLI in a subprocess killed with SIGKILL, datatrove's Slurm executor with stand-in Slurm
commands (tests/fake_slurm.py), a local Ray cluster started here, the loopback Hub for publishing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image as PILImage
from run_checks import stable

from mmsieve.cli import main
from mmsieve.dedup.run import run_dedup
from mmsieve.executors import WORKER_SLOT_ENV, make_executor, run_executor
from mmsieve.filters import HygieneFilter, UniFilterScorer
from mmsieve.models.tiny import build_tiny_unifilter
from mmsieve.readers import SampleReader
from mmsieve.runner import run_steps


MMSIEVE = str(Path(sys.executable).parent / "mmsieve")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_unifilter(tmp_path_factory.mktemp("uf") / "model")


def captions(photos: dict[str, bytes], folder: Path, rows: int, shards: int = 4, copies: int = 0) -> Path:
    """`rows` caption pairs with real JPEGs (48-96 px, every 9th one 8 px wide: hygiene drops it) in `shards`
    parquet files; the last `copies` rows are re-encoded copies of the first ones (near-duplicates)."""
    from mmsieve.demo.corpus import save_shards

    names = sorted(photos)
    images, texts = [], []
    for i in range(rows):
        source = i - (rows - copies) if i >= rows - copies else i
        side = 8 if source % 9 == 8 else 48 + 8 * (source % 7)
        buffer = io.BytesIO()
        image = PILImage.open(io.BytesIO(photos[names[source % len(names)]])).convert("RGB").resize((side, 40))
        image.save(buffer, format="JPEG", quality=70 if i >= rows - copies else 90)
        images.append({"bytes": buffer.getvalue(), "path": f"{i}.jpg"})
        texts.append(f"Caption {i} of {names[source % len(names)].replace('_', ' ')}.")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    return save_shards({"image": images, "caption": texts}, features, folder, shards=shards)


def rows(folder: Path, *columns: str) -> list[tuple]:
    """The rows of a run's parquet folder as sorted tuples of `columns` (order across task files ignored)."""
    table = datasets.load_dataset("parquet", data_dir=str(folder), split="train")
    return sorted(zip(*(table[c] for c in columns), strict=True))


# --- GPU placement ------------------------------------------------------------------------------------------------


class _RecordSlot:
    """A pipeline step that writes its task's worker slot to `folder/<rank>` (what `pick_device` reads)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        Path(self.folder, str(rank)).write_text(os.environ.get(WORKER_SLOT_ENV, "unset"))
        yield from data or ()


def test_local_workers_run_tasks_on_their_own_slot(caption_source: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from mmsieve.models.devices import pick_device

    seen = tmp_path / "slots"
    seen.mkdir()
    executor = make_executor(
        "local", [SampleReader(str(caption_source)), _RecordSlot(str(seen))], tasks=4, workers=2,
        logging_dir=tmp_path / "logs", verbose=False,
    )  # fmt: skip
    run_executor(executor)
    slots = {int(p.read_text()) for p in seen.iterdir()}
    assert len(list(seen.iterdir())) == 4 and slots <= {0, 1} and WORKER_SLOT_ENV not in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv(WORKER_SLOT_ENV, "1")
    assert pick_device() == torch.device("cuda", 1)  # worker slot 1 -> the second GPU
    monkeypatch.setenv(WORKER_SLOT_ENV, "3")
    assert pick_device() == torch.device("cuda", 1)


# --- the CLI on Slurm (stand-in commands), then --finalize ---------------------------------------------------------


def test_cli_submits_to_slurm_and_finalizes(
    photos: dict[str, bytes], tmp_path: Path, fake_slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = captions(photos, tmp_path / "src", rows=40, copies=6)
    slurm = ["--executor", "slurm", "--partition", "cpu", "--time", "00:10:00", "--tasks", "2"]
    # filter: one job array, then --finalize writes the stats a local run would
    argv = ["filter", "-i", str(source), "-o", str(tmp_path / "slurm-filter"), *slurm]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "submitted 2 Slurm tasks" in printed and "--finalize" in printed, fake_slurm.read_text()[-2000:]
    assert not (tmp_path / "slurm-filter" / "stats.json").exists()
    assert main([*argv, "--finalize"]) == 0
    on_slurm = json.loads((tmp_path / "slurm-filter" / "stats.json").read_text())
    local = run_steps(str(source), tmp_path / "local-filter", [HygieneFilter()], tasks=2)
    assert stable(on_slurm) == stable(local) and on_slurm["removed_by_reason"] == {"image_too_small": 3}
    assert "rows/s" in capsys.readouterr().out  # the summary table of the finalized run
    # dedup: three chained jobs (embed -> cluster -> filter), then --finalize
    argv = ["dedup", "-i", str(source), "-o", str(tmp_path / "slurm-dedup"), "--embedder", "phash", *slurm]
    assert main(argv) == 0 and "--finalize" in capsys.readouterr().out
    launched = sorted((tmp_path / "slurm-dedup").rglob("launch_script.slurm"))
    assert len(launched) == 3, fake_slurm.read_text()[-2000:]
    assert main([*argv, "--finalize"]) == 0
    deduped = json.loads((tmp_path / "slurm-dedup" / "stats.json").read_text())
    reference = run_dedup([str(source)], tmp_path / "local-dedup", "phash", tasks=2)
    assert deduped["removed_by_reason"] == reference["removed_by_reason"] and deduped["dedup"]["duplicates"] >= 5
    assert rows(tmp_path / "slurm-dedup" / "kept", "caption") == rows(tmp_path / "local-dedup" / "kept", "caption")


# --- resume after SIGKILL -----------------------------------------------------------------------------------------


def _wait_for(condition: Any, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before it could be interrupted")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def test_killed_run_resumes_without_redoing_or_duplicating(
    photos: dict[str, bytes], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = captions(photos, tmp_path / "src", rows=320, shards=4)

    def score(out: Path) -> list[str]:
        return [
            "score",
            "--model",
            str(checkpoint),
            "-i",
            str(source),
            "-o",
            str(out),
            "--tasks",
            "8",
            "--no-progress",
        ]

    out = tmp_path / "out"
    argv = score(out)
    process = subprocess.Popen(
        [MMSIEVE, *argv], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    completions = out / "datatrove" / "completions"
    try:
        _wait_for(lambda: completions.is_dir() and len(list(completions.iterdir())) >= 2, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run and any worker it started, mid-task
        process.wait()
    done = sorted(p.name for p in completions.iterdir())
    assert 2 <= len(done) < 8, done
    stats_files = {rank: out / "datatrove" / "stats" / f"{rank}.json" for rank in done}
    written = {rank: path.stat().st_mtime_ns for rank, path in stats_files.items()}

    assert main(argv) == 2 and "--resume" in capsys.readouterr().err  # earlier results are not overwritten
    assert main([*argv, "--resume"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 320 == stats["kept"] + stats["removed"] and stats["tasks"] == 8
    assert all(path.stat().st_mtime_ns == written[rank] for rank, path in stats_files.items())  # not run again
    assert len(list(completions.iterdir())) == 8

    uninterrupted = tmp_path / "uninterrupted"
    assert main(score(uninterrupted)) == 0
    resumed = rows(out / "kept", "caption", "unifilter_score")
    assert resumed == rows(uninterrupted / "kept", "caption", "unifilter_score")
    assert len({caption for caption, _ in resumed}) == len(resumed) == stats["kept"]  # nothing written twice
    reference = json.loads((uninterrupted / "stats.json").read_text())
    assert stable(stats) == stable(reference)


def test_interrupted_publish_uploads_only_the_missing_shards(hub: Any, caption_source: Path, tmp_path: Path) -> None:
    from mmsieve.hub.dataset_repo import build_dataset_repo
    from mmsieve.hub.publish import MANIFEST, push_dataset

    run = tmp_path / "run"
    run_steps(str(caption_source), run, [HygieneFilter()])
    shard = 150_000
    repo = hub.new_repo_id("interrupted")
    expected = build_dataset_repo(run, tmp_path / "expected", max_shard_bytes=shard, repo_id=repo)
    lfs_files = [p for p in expected.rglob("*") if p.suffix in (".parquet", ".png")]
    assert len(lfs_files) >= 6
    hub.upload_delay = 0.3  # a slow link: uploads finish one by one
    code = (
        f"from mmsieve.hub.publish import push_dataset; push_dataset({str(run)!r}, {repo!r}, max_shard_bytes={shard})"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stderr=subprocess.DEVNULL)

    def stored() -> list[str]:
        return [path for method, path in list(hub.requests) if method == "STORED"]

    try:
        _wait_for(lambda: len(stored()) >= 2, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # the uploads still queued find their client gone and are discarded; wait until every one has been settled
    settled_since, deadline = time.monotonic(), time.monotonic() + 30
    while time.monotonic() - settled_since < 1.0:
        log = list(hub.requests)
        puts = sum(method == "PUT" and path.startswith("/_lfs/") for method, path in log)
        if sum(method in ("STORED", "DISCARDED") for method, _ in log) < puts:
            settled_since = time.monotonic()
        assert time.monotonic() < deadline, "uploads still in flight"
        time.sleep(0.05)
    assert len(stored()) >= 2
    # objects are content-addressed and the loopback Hub is shared by the session: ask it what it holds now
    objects = {f"/_lfs/{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in lfs_files}
    missing = {path for path in objects if not hub.store.has_blob(path.rsplit("/", 1)[1])}
    assert set(stored()) <= objects - missing and 0 < len(missing) < len(objects)
    assert [c.title for c in hub.commits(repo)] == ["initial commit"]  # nothing half-published

    hub.upload_delay = 0.0
    hub.reset_log()
    report = push_dataset(run, repo, max_shard_bytes=shard)
    uploads = {path for method, path in hub.requests if method == "PUT" and path.startswith("/_lfs/")}
    assert uploads == missing  # only what the interrupted publish had not stored
    assert report["changed"] and len(hub.commits(repo)) == 2  # the seeding commit and this one
    files = hub.files(repo)
    assert {k: v for k, v in files.items() if k not in (MANIFEST, ".gitattributes")} == {
        p.relative_to(expected).as_posix(): p.read_bytes() for p in expected.rglob("*") if p.is_file()
    }


# --- Ray ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    """A local Ray cluster for this module's tests (2 CPUs, no dashboard)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_local_executors_rows(
    ray_cluster: Any, photos: dict[str, bytes], checkpoint: Path, tmp_path: Path
) -> None:
    source = captions(photos, tmp_path / "src", rows=64, shards=4, copies=8)
    outputs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        options = {"executor": executor, "tasks": 4, "workers": 2 if executor == "ray" else 1}
        scored = run_steps(
            str(source), out / "scored", [HygieneFilter(), UniFilterScorer(str(checkpoint), batch_size=8)], **options
        )
        deduped = run_dedup([str(out / "scored" / "kept")], out / "deduped", "phash", **options)
        outputs[executor] = (scored, deduped)
    (local_scored, local_deduped), (ray_scored, ray_deduped) = outputs["local"], outputs["ray"]
    assert stable(ray_scored) == stable(local_scored) and 0 < ray_scored["kept"] < ray_scored["rows_in"]
    for key in ("rows_in", "kept", "removed_by_reason", "tasks"):
        assert ray_deduped[key] == local_deduped[key]
    assert ray_deduped["removed_by_reason"]["near_duplicate"] >= 7
    for key in ("samples", "clusters", "duplicates"):
        assert ray_deduped["dedup"][key] == local_deduped["dedup"][key]
    for stage in ("scored", "deduped"):
        for split in ("kept", "removed"):
            columns = ("caption", "unifilter_score") if split == "kept" else ("caption", "mmsieve_reason")
            local = rows(tmp_path / "local" / stage / split, *columns)
            assert rows(tmp_path / "ray" / stage / split, *columns) == local and local
    images = [rows(tmp_path / name / "deduped" / "kept", "caption", "image") for name in ("local", "ray")]
    assert images[0] == images[1]  # the same image bytes, row for row


# --- a real single-node Slurm (Debian's slurm-wlm, started here) --------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import slurm_cluster as slurm

    reason = slurm.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = slurm.SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_real_slurm_runs_the_chained_dedup_stages(
    slurm_cluster: Any, photos: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    source = captions(photos, tmp_path / "src", rows=40, copies=6)
    argv = ["dedup", "-i", str(source), "-o", str(tmp_path / "out"), "--embedder", "phash", "--executor", "slurm"]
    argv += ["--partition", "cpu", "--time", "00:10:00", "--tasks", "2"]
    assert main(argv) == 0  # sbatch: embed (2 tasks) -> cluster (1) -> filter (2), each after the one before
    slurm_cluster.wait_idle(timeout=240)
    logs = "\n".join(p.read_text()[-800:] for p in sorted((tmp_path / "out").rglob("slurm_logs/*.out")))
    assert main([*argv, "--finalize"]) == 0, logs
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    reference = run_dedup([str(source)], tmp_path / "local", "phash", tasks=2)
    assert stats["removed_by_reason"] == reference["removed_by_reason"] and stats["dedup"]["duplicates"] >= 5
    assert rows(tmp_path / "out" / "kept", "caption") == rows(tmp_path / "local" / "kept", "caption")
