"""A loopback fake Hugging Face Hub for integration tests (stdlib HTTP server, storage on disk).

`LoopbackHub` serves the endpoints that huggingface_hub 2.x and datasets 5.x call for create/delete repo,
preupload, commit (regular and git-LFS "basic" transfers), tree/paths-info listings, repo info, refs, branches and
resolve downloads. It never advertises Xet, so clients must run with `HF_HUB_DISABLE_XET=1`. The HTTP routes live in
`loopback_hub_routes.py`; this module holds the repository model and the server lifecycle.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import TracebackType


LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files of 10 MiB or more in LFS whatever their name
_LFS_COMMON = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.lz4 *.mds *.mlmodel *.model *.msgpack *.npy "
    "*.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar "
    "*.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
_LFS_MEDIA = "*.mp3 *.ogg *.wav *.flac *.bmp *.gif *.png *.tiff *.jpg *.jpeg *.webp *.mp4 *.webm".split()


def default_gitattributes(repo_type: str) -> bytes:
    """The `.gitattributes` the Hub seeds new repos with (datasets also track audio, image and video files)."""
    patterns = _LFS_COMMON + (_LFS_MEDIA if repo_type == "dataset" else [])
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns).encode()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-LFS pointer file stored in git in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An error answered as JSON with the Hub's `X-Error-Code` header (when `code` is set)."""

    def __init__(
        self, status: int, message: str, code: str | None = None, body: dict | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.body, self.headers = body or {}, headers or {}


@dataclass(frozen=True)
class Entry:
    """A file in a commit tree: content is stored on disk under its sha256."""

    sha256: str
    size: int
    lfs: bool
    blob_id: str  # git blob sha1 of the content, or of the LFS pointer for LFS files

    @property
    def oid(self) -> str:
        """The oid preupload compares with the client's: sha256 for LFS files, git sha1 for regular ones."""
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Commit:
    """One commit: a full snapshot of the tree plus its message."""

    oid: str
    title: str
    message: str
    parent: str | None
    tree: dict[str, Entry]
    date: str


@dataclass
class Repo:
    """A repository: commits by oid, branches and tags by name."""

    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, str] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, tag, `refs/...` name or full commit oid points at."""
        rev = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if rev.startswith("refs/pr/") and rev[8:].isdigit() and int(rev[8:]) in self.pulls:
            return self.commits[self.pulls[int(rev[8:])]]
        oid = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def history(self, revision: str) -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        out, commit = [], self.resolve(revision)
        while True:
            out.append(commit)
            if commit.parent is None:
                return out
            commit = self.commits[commit.parent]


class HubStore:
    """Thread-safe repository model; blob contents live in `storage/objects/<sha256>`."""

    def __init__(self, storage: Path, user: str) -> None:
        self.objects = storage / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self._counter = itertools.count()

    # -- blobs -------------------------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        """Store `data` under its sha256 (atomic, idempotent) and return the digest."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.objects / sha256
        if not target.exists():
            fd, tmp = tempfile.mkstemp(dir=self.objects)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        return sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """Whether an object with this digest (and size, if given) is stored."""
        path = self.objects / sha256
        return path.is_file() and (size is None or path.stat().st_size == size)

    def read(self, entry: Entry) -> bytes:
        """The content of a tree entry."""
        return (self.objects / entry.sha256).read_bytes()

    # -- repos -------------------------------------------------------------------------------------------------
    def get(self, repo_type: str, repo_id: str) -> Repo:
        """The repo, or a RepoNotFound error."""
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def create(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """Create a repo seeded with a `.gitattributes` commit; False when it already exists."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            repo = Repo(repo_type, repo_id, private)
            self.repos[(repo_type, repo_id)] = repo
            data = default_gitattributes(repo_type)
            self._new_commit(
                repo, "main", None, {".gitattributes": self._entry(data, lfs=False)}, "initial commit", ""
            )
            return True

    def delete(self, repo_type: str, repo_id: str) -> None:
        """Delete a repo (RepoNotFound if missing)."""
        with self.lock:
            if self.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, "Repository not found", "RepoNotFound")

    def _entry(self, data: bytes, lfs: bool) -> Entry:
        sha256 = self.put_blob(data)
        blob = git_blob_sha1(lfs_pointer(sha256, len(data)) if lfs else data)
        return Entry(sha256, len(data), lfs, blob)

    def _new_commit(
        self, repo: Repo, branch: str, parent: Commit | None, tree: dict[str, Entry], title: str, message: str
    ) -> Commit:
        seed = f"{repo.repo_id}\0{parent.oid if parent else ''}\0{title}\0{next(self._counter)}\0{time.time_ns()}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        commit = Commit(oid, title, message, parent.oid if parent else None, tree, date)
        repo.commits[oid] = commit
        if branch.startswith("refs/pr/"):
            repo.pulls[int(branch[8:])] = oid
        else:
            repo.branches[branch] = oid
        return commit

    def commit(self, repo: Repo, revision: str, header: dict, ops: list[dict], create_pr: bool) -> tuple[Commit, int]:
        """Apply NDJSON commit operations on a branch; returns the commit and the PR number (0 without PR)."""
        with self.lock:
            branch = revision.removeprefix("refs/heads/")
            if branch not in repo.branches and not (branch.startswith("refs/pr/") and branch[8:].isdigit()):
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.resolve(branch)
            parent_oid = header.get("parentCommit")
            if parent_oid and parent_oid != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            pr = 0
            if create_pr:
                pr = max(repo.pulls, default=0) + 1
                branch = f"refs/pr/{pr}"
            tree = dict(head.tree)
            for op in ops:
                self._apply(tree, op["key"], op["value"])
            commit = self._new_commit(
                repo, branch, head, tree, header.get("summary", ""), header.get("description", "")
            )
            return commit, pr

    def _apply(self, tree: dict[str, Entry], key: str, value: dict) -> None:
        path = value["path"].strip("/")
        if key == "file":
            tree[path] = self._entry(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            oid, size = value["oid"], int(value["size"])
            if not self.has_blob(oid, size):
                raise HubError(400, f"LFS object {oid} for '{path}' was never uploaded (or has the wrong size)")
            tree[path] = Entry(oid, size, True, git_blob_sha1(lfs_pointer(oid, size)))
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [p for p in tree if p.startswith(path + "/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        else:
            raise HubError(400, f"Unsupported commit operation: {key}")

    def upload_mode(self, commit: Commit, path: str, sample: bytes, size: int) -> str:
        """`lfs` for files the repo's `.gitattributes` tracks, binary samples and large files, else `regular`."""
        if size >= LFS_THRESHOLD or b"\0" in sample:
            return "lfs"
        attributes = commit.tree.get(".gitattributes")
        text = self.read(attributes).decode(errors="replace") if attributes else ""
        for line in text.splitlines():
            pattern, *attrs = line.split()
            if "filter=lfs" not in attrs:
                continue
            target = path if "/" in pattern else PurePosixPath(path).name
            if fnmatch.fnmatchcase(target, pattern.replace("**/", "*")):
                return "lfs"
        return "regular"


class _QuietServer(ThreadingHTTPServer):
    """A client that went away mid-request (killed, timed out) is not an error worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackHub:
    """A fake Hub on `http://127.0.0.1:<random port>`; use as a context manager (starts/stops the server).

    Attributes:
        url: base URL to use as `HF_ENDPOINT`.
        requests: `(method, path)` of every request received (path without query string), and
            `("STORED", "/_lfs/<oid>")` once an LFS upload is stored (`"DISCARDED"`: its client left first).
        tokens_seen: bearer tokens received in `Authorization` headers.
        upload_delay: seconds each LFS upload takes, uploads served one at a time, and an upload whose client has
            gone by then is discarded, as a broken transfer (to interrupt a publish midway).
    """

    def __init__(self, storage: Path, user: str = "tester") -> None:
        self.store = HubStore(Path(storage), user)
        self.user = user
        self.requests: list[tuple[str, str]] = []
        self.tokens_seen: set[str] = set()
        self.upload_delay = 0.0  # seconds each LFS upload takes; uploads then finish one at a time (a slow link)
        self.upload_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> LoopbackHub:
        from loopback_hub_routes import HubRequestHandler  # imported here: the routes module imports this one

        handler = type("BoundHubRequestHandler", (HubRequestHandler,), {"hub": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def record(self, method: str, path: str, token: str | None) -> None:
        """Log one request (called by the handler)."""
        with self.store.lock:
            self.requests.append((method, path))
            if token:
                self.tokens_seen.add(token)

    def reset_log(self) -> None:
        """Forget logged requests and tokens (the `hub` fixture calls this at the start of each test)."""
        with self.store.lock:
            self.requests.clear()
            self.tokens_seen.clear()

    def new_repo_id(self, prefix: str = "repo") -> str:
        """A repo id that no other test uses, e.g. `tester/data-3`."""
        return f"{self.user}/{prefix}-{next(self._ids)}"

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        """The web URL of a repo as the Hub spells it (models have no type prefix)."""
        return f"{self.url}/{repo_id}" if repo_type == "model" else f"{self.url}/{repo_type}s/{repo_id}"

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """The tree at `revision` as `{path: content}` (LFS objects resolved)."""
        with self.store.lock:
            tree = dict(self.store.get(repo_type, repo_id).resolve(revision).tree)
        return {path: self.store.read(entry) for path, entry in sorted(tree.items())}

    def commits(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list[Commit]:
        """Commits reachable from `revision`, newest first (the seeding `initial commit` is last)."""
        with self.store.lock:
            return self.store.get(repo_type, repo_id).history(revision)

    def is_private(self, repo_id: str, repo_type: str = "dataset") -> bool:
        """Whether the repo was created (or updated) as private."""
        with self.store.lock:
            return self.store.get(repo_type, repo_id).private
