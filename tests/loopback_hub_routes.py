"""HTTP routes of the loopback fake Hub (see `loopback_hub.py`): one request handler, stdlib only.

URL shapes (`{t}` = models|datasets|spaces|kernels, `{p}` = "" | "datasets/" | "spaces/" | "kernels/"):
`/api/whoami-v2`, `/api/repos/create|delete`, `/api/validate-yaml`, `/api/{t}/{ns}/{name}[/revision/{rev}]`,
`/api/{t}/{repo}/{preupload|commit|paths-info|commits}/{rev}`, `/api/{t}/{repo}/tree/{rev}[/{path}]`,
`/api/{t}/{repo}/refs`, `/api/{t}/{repo}/branch/{name}`, `/api/{t}/{repo}/tag/{rev}`, `/api/{t}/{repo}/settings`,
`/{p}{repo}.git/info/lfs/objects/batch`, `/{p}{repo}/resolve/{rev}/{path}` and `/_lfs/{oid}[/verify]` (the upload
href handed out by the batch endpoint, like a presigned S3 URL: no auth).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import select
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from loopback_hub import Commit, Entry, HubError, Repo, lfs_pointer


if TYPE_CHECKING:
    from loopback_hub import LoopbackHub

API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
URL_PREFIXES = {"datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_TRUE = {"1", "true", "True"}


def _file_json(path: str, entry: Entry, commit: Commit, expand: bool) -> dict[str, Any]:
    """A tree / paths-info file entry (never with `xetHash`, which would switch clients to Xet downloads)."""
    item: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
    if entry.lfs:
        pointer_size = len(lfs_pointer(entry.sha256, entry.size))
        item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": pointer_size}
    if expand:  # gap: the real Hub reports each file's own last commit, here it is the revision's head
        item["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
    return item


def _dir_json(path: str, commit: Commit) -> dict[str, Any]:
    oid = hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def _listing(commit: Commit, base: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
    """Entries under folder `base` ("" = root): direct children, or all descendants when recursive."""
    prefix = f"{base}/" if base else ""
    files, dirs = [], set()
    for path in commit.tree:
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        if len(parts) == 1 or recursive:
            files.append(path)
            dirs.update(prefix + "/".join(parts[:i]) for i in range(1, len(parts)))
        else:
            dirs.add(prefix + parts[0])
    if base and not files and not dirs:
        raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
    return [_dir_json(d, commit) for d in sorted(dirs)] + [
        _file_json(p, commit.tree[p], commit, expand) for p in sorted(files)
    ]


def _card_class(repo_type: str) -> Any:
    from huggingface_hub import DatasetCard, ModelCard, RepoCard

    return {"dataset": DatasetCard, "model": ModelCard}.get(repo_type, RepoCard)


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one request; `hub` is bound by `LoopbackHub.__enter__` on a subclass."""

    protocol_version = "HTTP/1.1"
    hub: LoopbackHub

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; `hub.requests` is the log."""

    def do_GET(self) -> None:
        """Every method goes through the same dispatcher."""
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        auth = self.headers.get("Authorization", "")
        self.token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        self.hub.record(self.command, split.path, self.token)
        self.body = self._read_body()
        segments = [unquote(s) for s in split.path.strip("/").split("/")]
        try:
            self._route(self.command, segments)
        except HubError as e:
            message = e.message.encode("ascii", "replace").decode().replace("\n", " ")  # headers must be latin-1
            headers = {"X-Error-Message": message, **e.headers, **({"X-Error-Code": e.code} if e.code else {})}
            self._send(e.status, {"error": e.message, **e.body}, headers)
        except Exception as e:  # malformed payload or a bug here: 400, not 500, which clients retry for ~30 s
            traceback.print_exc(file=sys.stderr)
            self._send(400, {"error": f"Bad request (loopback hub): {type(e).__name__}: {e}"})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self) -> Any:
        return json.loads(self.body or b"{}")

    def _send(
        self, status: int, body: Any = b"", headers: dict | None = None, content_type: str = "application/json"
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        repo = self.hub.store.get(repo_type, repo_id)
        if repo.private and not self.token:
            raise HubError(401, "Repository not found", "RepoNotFound")
        if write and not self.token:
            raise HubError(401, "You must be authenticated to write to this repository")
        return repo

    def _client_gone(self) -> bool:
        """Whether the client closed its end of the connection (killed, or gave up) while its request was served."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _require_token(self) -> None:
        if not self.token:
            raise HubError(401, "Invalid credentials in Authorization header")

    # -- routing -------------------------------------------------------------------------------------------------
    def _route(self, method: str, s: list[str]) -> None:
        if s[0] == "api":
            return self._api(method, s[1:])
        if s[0] == "_lfs" and len(s) >= 2:
            return self._lfs_object(method, s[1:])
        repo_type = "model"
        if s[0] in URL_PREFIXES and len(s) >= 3:
            repo_type, s = URL_PREFIXES[s[0]], s[1:]
        if method == "POST" and len(s) == 6 and s[1].endswith(".git") and s[2:] == "info lfs objects batch".split():
            return self._lfs_batch(repo_type, f"{s[0]}/{s[1][:-4]}")
        if method in ("GET", "HEAD") and len(s) >= 5 and s[2] == "resolve":
            return self._resolve(self._repo(repo_type, f"{s[0]}/{s[1]}"), s[3], "/".join(s[4:]))
        raise HubError(404, f"Not found: {method} {self.path}")

    def _api(self, method: str, s: list[str]) -> None:
        match (method, s):
            case ("GET", ["whoami-v2"]):
                return self._whoami()
            case ("POST", ["repos", "create"]):
                return self._create_repo()
            case ("DELETE", ["repos", "delete"]):
                self._require_token()
                payload = self._json()
                repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
                self.hub.store.delete(payload.get("type") or "model", repo_id)
                return self._send(200, {})
            case ("POST", ["validate-yaml"]):
                return self._validate_yaml()
            case (_, [kind, ns, name, *rest]) if kind in API_TYPES:
                return self._repo_api(method, API_TYPES[kind], f"{ns}/{name}", rest)
        raise HubError(404, f"Not found: {method} {self.path}")

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str]) -> None:
        write = method != "GET" and rest[:1] != ["paths-info"]
        repo = self._repo(repo_type, repo_id, write=write)
        store = self.hub.store
        match (method, rest):
            case ("GET", []):
                return self._info(repo, "main")
            case ("GET", ["revision", rev]):
                return self._info(repo, rev)
            case ("POST", ["preupload", rev]):
                return self._preupload(repo, rev)
            case ("POST", ["commit", rev]):
                lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
                header = next((line["value"] for line in lines if line["key"] == "header"), {})
                ops = [line for line in lines if line["key"] != "header"]
                commit, pr = store.commit(repo, rev, header, ops, self.query.get("create_pr") in _TRUE)
                url = self.hub.repo_url(repo.repo_type, repo.repo_id)
                pr_url = f"{url}/discussions/{pr}" if pr else None
                body = {"commitUrl": f"{url}/commit/{commit.oid}", "commitOid": commit.oid, "pullRequestUrl": pr_url}
                return self._send(200, {**body, "success": True})
            case ("GET", ["tree", rev, *path]):
                with store.lock:
                    commit = repo.resolve(rev)
                listing = _listing(
                    commit, "/".join(path).strip("/"), self.query.get("recursive") in _TRUE, self._expand()
                )
                return self._send(200, listing)
            case ("POST", ["paths-info", rev]):
                return self._paths_info(repo, rev)
            case ("GET", ["refs"]):
                return self._refs(repo)
            case ("GET", ["commits", rev]):
                with store.lock:
                    history = repo.history(rev)
                authors = [{"user": self.hub.user}]
                items = [
                    {"id": c.oid, "title": c.title, "message": c.message, "authors": authors, "date": c.date}
                    for c in history
                ]
                return self._send(200, items)
            case ("POST", ["branch", branch]):
                with store.lock:
                    if branch in repo.branches:
                        raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                    repo.branches[branch] = repo.resolve(self._json().get("startingPoint") or "main").oid
                return self._send(200, {})
            case ("DELETE", ["branch", branch]):
                with store.lock:
                    if repo.branches.pop(branch, None) is None:
                        raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                return self._send(200, {})
            case ("POST", ["tag", rev]):
                payload = self._json()
                with store.lock:
                    if payload["tag"] in repo.tags:
                        raise HubError(409, f"Tag already exists: {payload['tag']}")
                    repo.tags[payload["tag"]] = repo.resolve(rev).oid
                return self._send(200, {})
            case ("PUT", ["settings"]):
                payload = self._json()
                with store.lock:
                    if "private" in payload:
                        repo.private = bool(payload["private"])
                    if "visibility" in payload:
                        repo.private = payload["visibility"] == "private"
                return self._send(200, {})
        raise HubError(404, f"Not found: {method} {self.path}")

    def _expand(self) -> bool:
        return self.query.get("expand") in _TRUE

    # -- API handlers --------------------------------------------------------------------------------------------
    def _whoami(self) -> None:
        self._require_token()
        token_info = {"displayName": "loopback", "role": "write"}
        user = {"type": "user", "id": "0" * 24, "name": self.hub.user, "fullname": "Loopback Tester", "orgs": []}
        self._send(200, {**user, "auth": {"type": "access_token", "accessToken": token_info}})

    def _create_repo(self) -> None:
        self._require_token()
        payload = self._json()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        url = self.hub.repo_url(repo_type, repo_id)
        if not self.hub.store.create(repo_type, repo_id, private):
            raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        payload = self._json()
        try:
            _card_class(payload.get("repoType") or "model")(payload.get("content", ""))
        except Exception as e:  # yaml errors, "metadata block should be a dict", invalid model-index...
            return self._send(400, {"errors": [{"message": f"{type(e).__name__}: {e}"}]})
        self._send(200, {"errors": [], "warnings": []})

    def _info(self, repo: Repo, rev: str) -> None:
        with self.hub.store.lock:
            commit = repo.resolve(rev)
        blobs = self.query.get("blobs") in _TRUE
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                item = _file_json(path, entry, commit, expand=False)
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs:
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": item["lfs"]["pointerSize"],
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": repo.repo_id,
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.tree.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        if "README.md" in commit.tree:
            try:
                card = _card_class(repo.repo_type)(self.hub.store.read(commit.tree["README.md"]).decode())
                info["cardData"] = card.data.to_dict()
            except Exception:  # the real Hub also omits cardData when the README metadata is invalid
                pass
        self._send(200, info)

    def _preupload(self, repo: Repo, rev: str) -> None:
        payload = self._json()
        store = self.hub.store
        with store.lock:
            commit = repo.resolve(rev)
        gitignore = payload.get("gitIgnore")
        if gitignore is None and ".gitignore" in commit.tree:
            gitignore = store.read(commit.tree[".gitignore"]).decode(errors="replace")
        patterns = [p.strip() for p in (gitignore or "").splitlines() if p.strip() and p.strip()[0] not in "#!"]
        files = []
        for f in payload["files"]:
            path = f["path"]
            mode = store.upload_mode(commit, path, base64.b64decode(f.get("sample") or ""), int(f["size"]))
            ignored = any(
                fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], p) for p in patterns
            )
            existing = commit.tree.get(path)
            oid = existing.oid if existing is not None else None
            files.append({"path": path, "uploadMode": mode, "shouldIgnore": ignored, "oid": oid})
        self._send(200, {"files": files, "commitOid": commit.oid})

    def _paths_info(self, repo: Repo, rev: str) -> None:
        with self.hub.store.lock:
            commit = repo.resolve(rev)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = self._json()
            paths, expand = payload.get("paths", []), str(payload.get("expand")) in _TRUE
        else:
            form = parse_qs(self.body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1] in _TRUE
        out = []
        for path in (p.strip("/") for p in paths):
            if path in commit.tree:
                out.append(_file_json(path, commit.tree[path], commit, expand))
            elif any(p.startswith(f"{path}/") for p in commit.tree):
                out.append(_dir_json(path, commit))
        self._send(200, out)

    def _refs(self, repo: Repo) -> None:
        def ref(name: str, full: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": oid}

        with self.hub.store.lock:
            body = {
                "branches": [ref(b, f"refs/heads/{b}", oid) for b, oid in repo.branches.items()],
                "tags": [ref(t, f"refs/tags/{t}", oid) for t, oid in repo.tags.items()],
                "converts": [],
                "pullRequests": [ref(f"refs/pr/{n}", f"refs/pr/{n}", oid) for n, oid in repo.pulls.items()],
            }
        self._send(200, body)

    # -- LFS and downloads ---------------------------------------------------------------------------------------
    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        payload = self._json()
        operation = payload.get("operation", "upload")
        self._repo(repo_type, repo_id, write=operation == "upload")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            stored = self.hub.store.has_blob(oid, size)
            if operation == "upload" and not stored:  # no "actions" = already uploaded, the client skips it
                href = f"{self.hub.url}/_lfs/{oid}"
                item["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
            elif operation == "download":
                if stored:
                    item["actions"] = {"download": {"href": f"{self.hub.url}/_lfs/{oid}"}}
                else:
                    item["error"] = {"code": 404, "message": "Object does not exist"}
            objects.append(item)
        body = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        self._send(200, body, content_type="application/vnd.git-lfs+json")

    def _lfs_object(self, method: str, s: list[str]) -> None:
        oid, store = s[0], self.hub.store
        if method == "PUT" and len(s) == 1:
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise HubError(400, f"sha256 of the uploaded content does not match {oid}")
            with self.hub.upload_lock:  # a slow link: one upload at a time, each taking `upload_delay`
                if not self._client_gone():
                    time.sleep(self.hub.upload_delay)
                if self._client_gone():  # the transfer broke off: nothing is stored, as on a real server
                    self.hub.record("DISCARDED", f"/_lfs/{oid}", None)
                    self.close_connection = True
                    return None
                store.put_blob(self.body)
                self.hub.record("STORED", f"/_lfs/{oid}", None)
            return self._send(200)
        if method == "POST" and s[1:] == ["verify"]:
            if not store.has_blob(oid, int(self._json()["size"])):
                raise HubError(404, f"LFS object {oid} not found")
            return self._send(200, {})
        if method in ("GET", "HEAD") and len(s) == 1 and store.has_blob(oid):
            return self._send(200, (store.objects / oid).read_bytes(), content_type="application/octet-stream")
        raise HubError(404, f"LFS object {oid} not found")

    def _resolve(self, repo: Repo, rev: str, path: str) -> None:
        with self.hub.store.lock:
            commit = repo.resolve(rev)
        entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = self.hub.store.read(entry)
        etag = entry.sha256 if entry.lfs else entry.blob_id
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        status, wanted = 200, self.headers.get("Range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            size = len(data)
            if match and match[1]:
                start, end = int(match[1]), min(int(match[2]) if match[2] else size - 1, size - 1)
            elif match and match[2]:
                start, end = max(0, size - int(match[2])), size - 1
            else:
                start, end = size, -1
            if start >= size or start > end:
                headers["Content-Range"] = f"bytes */{size}"
                return self._send(416, b"", headers, "text/plain")
            status, data = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, data, headers, "application/octet-stream")
