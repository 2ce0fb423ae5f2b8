"""A loopback Hugging Face Hub for tests: standard-library HTTP on 127.0.0.1, random port.

It speaks the part of the Hub's HTTP API that the real clients use (huggingface_hub's HfApi,
`upload_folder`, `hf_hub_download`, transformers' `from_pretrained`), as those clients call the Hub:

- ``GET /api/whoami-v2``; ``POST /api/repos/create`` (409 if it exists); ``DELETE /api/repos/delete``
- ``GET /api/{type}s/{ns}/{name}[/revision/{rev}]`` (sha, siblings), ``.../refs``
- ``GET .../tree/{rev}[/{path}]``, ``POST .../paths-info/{rev}``
- ``POST .../preupload/{rev}`` (answers "lfs" for binaries and large files, "regular" otherwise)
- ``POST .../commit/{rev}`` (NDJSON: header, file (base64), lfsFile, deletedFile, deletedFolder) — a commit
  is applied all at once or not at all, like the Hub's
- ``POST .../branch/{branch}`` (create_branch; 409 if it exists), ``DELETE`` likewise
- ``POST {repo}.git/info/lfs/objects/batch`` then ``PUT /lfs-upload/{oid}`` (sha256 checked)
- ``HEAD/GET {repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and, for LFS files,
  ``X-Linked-Etag``/``X-Linked-Size``; ``Range`` requests
- 404s carry ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`` (transformers probes
  optional files and treats any other answer as fatal).

Test hooks: ``server.fail_next(route, n, status)`` makes the next n requests of a route (e.g. "commit",
"preupload", "lfs-batch", "lfs-put", "create-repo", "resolve") fail with a 5xx (or lose their connection,
``status=DROP``); ``server.requests`` logs
(method, route, status) of every request. Clients must run with ``HF_ENDPOINT=server.url`` and
``HF_HUB_DISABLE_XET=1`` set before huggingface_hub is imported (it reads them at import time).

Run it by hand: ``python tests/hub_server.py --token hf_xxx`` prints the endpoint and serves until Ctrl-C.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB in LFS
BINARY_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".png", ".jpg", ".gz", ".zip", ".h5", ".msgpack")
USERNAME = "tester"
DROP = 0  # fail_next(..., status=DROP): close the connection without answering


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:  # git blob id: what `ETag` carries for regular files
        return _git_blob_sha1(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)  # sha -> {path: blob}
    messages: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.commits:
            return rev
        return None


def validate_card_metadata(content: str) -> list[str]:
    """Errors in a card's YAML front matter: unparsable YAML, a non-mapping, or a malformed model-index."""
    import yaml  # pyyaml: the venv has it (bortify depends on it)

    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
    if not match:
        return []
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"YAML parse error: {err}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    errors = []
    for index, entry in enumerate(meta.get("model-index") or []):
        if not isinstance(entry, dict) or not entry.get("name"):
            errors.append(f"model-index[{index}] needs a name")
            continue
        for result in entry.get("results") or []:
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not task.get("type"):
                errors.append(f"model-index[{index}].results: task.type is required")
            if not (dataset.get("type") and dataset.get("name")):
                errors.append(f"model-index[{index}].results: dataset.type and dataset.name are required")
            for metric in result.get("metrics") or []:
                if not metric.get("type") or "value" not in metric:
                    errors.append(f"model-index[{index}].results: every metric needs type and value")
    return errors


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubState:
    """Everything the loopback Hub holds; guarded by one lock so every commit is atomic."""

    def __init__(self, token: str | None):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.lock = threading.RLock()
        self.failures: dict[str, list[int]] = {}  # route -> statuses still to answer
        self.requests: list[tuple[str, str, int]] = []

    def new_commit(self, repo: Repo, files: dict[str, Blob], message: str) -> str:
        sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        repo.commits[sha] = files
        repo.messages[sha] = message
        return sha


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "HubServer"

    # ---- plumbing ---------------------------------------------------------------------------------
    def log_message(self, format, *args):  # keep test output clean
        pass

    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self._log(status)  # before answering: a client that saw the answer also sees it in the log
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _log(self, status: int) -> None:
        with self.state.lock:
            self.state.requests.append((self.command, self._route_name, status))

    def _json(self, obj, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, err: HubError):
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json({"error": err.message}, err.status, headers)

    def _authorized_user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        if self.state.token is not None and auth[len("Bearer "):] != self.state.token:
            raise HubError(401, "Invalid credentials in Authorization header", "InvalidCredentials")
        return USERNAME

    def _require_write(self):
        if self._authorized_user() is None:
            raise HubError(401, "You must be authenticated to do this (no token sent)", "Unauthorized")

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and self._authorized_user() is None):
            raise HubError(404, f"Repository Not Found for url: {self.path}.", "RepoNotFound")
        return repo

    def _commit_files(self, repo: Repo, rev: str) -> tuple[str, dict[str, Blob]]:
        sha = repo.resolve(rev)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha, repo.commits[sha]

    def _dispatch(self):
        url = urlsplit(self.path)
        self._query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
        route, handler, args = self._route(self.command, parts)
        self._route_name = route
        try:
            with self.state.lock:
                pending = self.state.failures.get(route)
                injected = pending.pop(0) if pending else None
            if injected is not None:
                self._body()  # drain the request so the connection stays usable
                if injected == DROP:  # the connection dies before any answer
                    self._log(DROP)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                raise HubError(injected, f"Injected transient failure on {route}", None)
            if handler is None:
                self._body()
                raise HubError(404, f"No route for {self.command} {url.path}", None)
            handler(*args)
        except HubError as err:
            self._error(err)
        except Exception as err:  # a bug in the server must show up as a 500, not a hang
            self._json({"error": f"{type(err).__name__}: {err}"}, 500)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    # ---- routing ----------------------------------------------------------------------------------
    def _route(self, method: str, p: list[str]):
        """-> (route name, bound handler or None, args)."""
        if p[:2] == ["api", "whoami-v2"]:
            return "whoami", self.whoami, ()
        if p[:3] == ["api", "repos", "create"] and method == "POST":
            return "create-repo", self.create_repo, ()
        if p[:2] == ["api", "validate-yaml"] and method == "POST":
            return "validate-yaml", self.validate_yaml, ()
        if p[:3] == ["api", "repos", "delete"] and method == "DELETE":
            return "delete-repo", self.delete_repo, ()
        if len(p) >= 4 and p[0] == "api" and p[1] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[p[1]], f"{p[2]}/{p[3]}", p[4:]
            if not rest and method == "GET":
                return "repo-info", self.repo_info, (repo_type, repo_id, "main")
            if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                return "repo-info", self.repo_info, (repo_type, repo_id, rest[1])
            if rest[:1] == ["refs"] and method == "GET":
                return "refs", self.refs, (repo_type, repo_id)
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                return "tree", self.tree, (repo_type, repo_id, rest[1], "/".join(rest[2:]))
            if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
                return "paths-info", self.paths_info, (repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                return "preupload", self.preupload, (repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                return "commit", self.commit, (repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "branch" and method in ("POST", "DELETE"):
                return "branch", self.branch, (repo_type, repo_id, rest[1])
        if p[:1] == ["lfs-upload"] and len(p) == 2 and method == "PUT":
            return "lfs-put", self.lfs_put, (p[1],)
        # {prefix}{ns}/{name}.git/info/lfs/objects/batch
        if len(p) >= 6 and p[-4:] == ["info", "lfs", "objects", "batch"] and p[-5].endswith(".git"):
            head = p[:-4]
            repo_type = REPO_TYPES.get(head[0], "model") if len(head) == 3 else "model"
            ns_name = head[-2:]
            return "lfs-batch", self.lfs_batch, (repo_type, f"{ns_name[0]}/{ns_name[1][:-4]}")
        # {prefix}{ns}/{name}/resolve/{rev}/{path}
        if "resolve" in p and method in ("GET", "HEAD"):
            i = p.index("resolve")
            head = p[:i]
            if len(head) in (2, 3) and len(p) > i + 2:
                repo_type = REPO_TYPES.get(head[0], "model") if len(head) == 3 else "model"
                return "resolve", self.resolve, (repo_type, "/".join(head[-2:]), p[i + 1], "/".join(p[i + 2:]))
        return "unknown", None, ()

    # ---- account and repos ------------------------------------------------------------------------
    def whoami(self):
        self._body()
        if self._authorized_user() is None:
            raise HubError(401, "Invalid user token.", "Unauthorized")
        self._json({"type": "user", "id": "1", "name": USERNAME, "fullname": "Loopback Tester", "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def create_repo(self):
        payload = json.loads(self._body() or b"{}")
        self._require_write()
        repo_type = payload.get("type") or "model"
        name = payload.get("name")
        namespace = payload.get("organization") or USERNAME
        if not name:
            raise HubError(400, "Repo name is required")
        repo_id = f"{namespace}/{name}"
        url = f"{self.base_url}/{URL_PREFIX[repo_type]}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:  # the Hub's 409 body also carries the url
                self._json({"error": "You already created this model repo", "url": url}, 409)
                return
            private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
            repo = Repo(repo_type, repo_id, private)
            gitattributes = Blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
            repo.branches["main"] = self.state.new_commit(repo, {".gitattributes": gitattributes}, "initial commit")
            self.state.repos[(repo_type, repo_id)] = repo
        self._json({"url": url, "name": repo_id, "id": uuid.uuid4().hex})

    def delete_repo(self):
        payload = json.loads(self._body() or b"{}")
        self._require_write()
        repo_id = f"{payload.get('organization') or USERNAME}/{payload.get('name')}"
        with self.state.lock:
            if self.state.repos.pop((payload.get("type") or "model", repo_id), None) is None:
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        self._json({})

    def validate_yaml(self):
        """Check a README's metadata the way the Hub does before accepting it (a subset of its rules)."""
        payload = json.loads(self._body() or b"{}")
        errors = [{"message": m} for m in validate_card_metadata(payload.get("content", ""))]
        warnings = [] if errors or payload.get("content", "").startswith("---") else [{"message": "empty or missing yaml metadata in repo card"}]
        self._json({"errors": errors, "warnings": warnings}, 400 if errors else 200)

    def repo_info(self, repo_type, repo_id, rev):
        self._body()
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            sha, files = self._commit_files(repo, rev)
            siblings = [{"rfilename": path} for path in sorted(files)]
        self._json({"_id": repo_id, "id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                    "author": repo_id.split("/")[0], "disabled": False, "gated": False, "downloads": 0,
                    "likes": 0, "tags": [], "siblings": siblings, "lastModified": "2026-01-01T00:00:00.000Z",
                    "createdAt": "2026-01-01T00:00:00.000Z"})

    def refs(self, repo_type, repo_id):
        self._body()
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in repo.branches.items()]
        self._json({"branches": branches, "converts": [], "tags": []})

    def branch(self, repo_type, repo_id, name):
        payload = json.loads(self._body() or b"{}")
        self._require_write()
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            if self.command == "DELETE":
                if repo.branches.pop(name, None) is None:
                    raise HubError(404, f"Branch {name} not found", "RevisionNotFound")
            else:
                if name in repo.branches:
                    raise HubError(409, f"Reference already exists: refs/heads/{name}", None)
                start, _ = self._commit_files(repo, payload.get("startingPoint") or "main")
                repo.branches[name] = start
        self._json({})

    # ---- listing ----------------------------------------------------------------------------------
    @staticmethod
    def _entry(path: str, blob: Blob) -> dict:
        entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 134}
        return entry

    def _entries(self, files: dict[str, Blob], prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        out, dirs = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            if "/" in rest:
                parts = rest.split("/")
                for depth in range(1, len(parts) if recursive else 2):
                    dirs.add("/".join(filter(None, [prefix, *parts[:depth]])))
                if not recursive:
                    continue
            out.append(self._entry(path, files[path]))
        out += [{"type": "directory", "oid": _git_blob_sha1(d.encode()), "size": 0, "path": d} for d in sorted(dirs)]
        return out

    def tree(self, repo_type, repo_id, rev, path):
        self._body()
        recursive = self._query.get("recursive", ["false"])[0].lower() in ("1", "true")
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            _, files = self._commit_files(repo, rev)
            if path and path not in files and not any(f.startswith(path.rstrip("/") + "/") for f in files):
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            entries = self._entries(files, path, recursive)
        self._json(entries)

    def paths_info(self, repo_type, repo_id, rev):
        body = self._body()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(body or b"{}").get("paths", [])
        else:  # form-encoded: paths=a&paths=b
            paths = parse_qs(body.decode()).get("paths", [])
        if isinstance(paths, str):
            paths = [paths]
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            _, files = self._commit_files(repo, rev)
            out = []
            for path in paths:
                if path in files:
                    out.append(self._entry(path, files[path]))
                elif any(f.startswith(path.rstrip("/") + "/") for f in files):
                    out.append({"type": "directory", "oid": _git_blob_sha1(path.encode()), "size": 0, "path": path})
        self._json(out)

    # ---- uploads ----------------------------------------------------------------------------------
    def preupload(self, repo_type, repo_id, rev):
        payload = json.loads(self._body() or b"{}")
        self._require_write()
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            _, files = self._commit_files(repo, rev)
            answers = []
            for item in payload.get("files", []):
                path, size = item["path"], int(item.get("size", 0))
                sample = base64.b64decode(item.get("sample", ""))
                lfs = size > LFS_THRESHOLD or path.endswith(BINARY_SUFFIXES) or b"\0" in sample
                existing = files.get(path)
                answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                                "oid": existing.oid if existing else None})
        self._json({"files": answers, "commitOid": repo.branches.get(rev)})

    def lfs_batch(self, repo_type, repo_id):
        payload = json.loads(self._body() or b"{}")
        self._require_write()
        with self.state.lock:
            self._repo(repo_type, repo_id)
            objects = []
            for obj in payload.get("objects", []):
                answer = {"oid": obj["oid"], "size": int(obj["size"]), "authenticated": True}
                if obj["oid"] not in self.state.lfs:  # already stored objects need no upload
                    answer["actions"] = {"upload": {"href": f"{self.base_url}/lfs-upload/{obj['oid']}",
                                                    "expires_in": 3600}}
                objects.append(answer)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def lfs_put(self, oid):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid}")
        with self.state.lock:
            self.state.lfs[oid] = data
        self._send(200, b"", content_type="text/plain")

    def commit(self, repo_type, repo_id, rev):
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        self._require_write()
        with self.state.lock:  # the whole commit applies or nothing does
            repo = self._repo(repo_type, repo_id)
            head, files = self._commit_files(repo, rev)
            if rev not in repo.branches:
                raise HubError(400, f"Can only commit to a branch, got {rev}", "RevisionNotFound")
            files = dict(files)
            message = "commit"
            for item in lines:
                key, value = item.get("key"), item.get("value", {})
                if key == "header":
                    message = value.get("summary") or message
                    parent = value.get("parentCommit")
                    if parent and parent != head:
                        raise HubError(412, f"Parent commit {parent} is not the head of {rev} ({head})")
                elif key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                    files[value["path"]] = Blob(data, lfs=False)
                elif key == "lfsFile":
                    if value["oid"] not in self.state.lfs:
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    files[value["path"]] = Blob(self.state.lfs[value["oid"]], lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"File to delete not found: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(prefix)]:
                        del files[path]
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}")
            sha = self.state.new_commit(repo, files, message)
            repo.branches[rev] = sha
        self._json({"success": True, "commitOid": sha, "pullRequestUrl": None,
                    "commitUrl": f"{self.base_url}/{URL_PREFIX[repo_type]}{repo_id}/commit/{sha}"})

    # ---- downloads --------------------------------------------------------------------------------
    def resolve(self, repo_type, repo_id, rev, path):
        self._body()
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            sha, files = self._commit_files(repo, rev)
            blob = files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.oid}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(len(blob.data))
        data, status = blob.data, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token: str | None = None, port: int = 0):
        super().__init__(("127.0.0.1", port), Handler)
        self.state = HubState(token)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        with self.state.lock:
            return list(self.state.requests)

    def fail_next(self, route: str, n: int = 1, status: int = 503) -> None:
        """The next `n` requests of `route` answer `status` (a transient server error), or, with
        status=DROP, lose their connection before any answer."""
        with self.state.lock:
            self.state.failures.setdefault(route, []).extend([status] * n)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """What the repo holds at `revision` (for assertions)."""
        with self.state.lock:
            repo = self.state.repos[(repo_type, repo_id)]
            return {path: blob.data for path, blob in repo.commits[repo.resolve(revision)].items()}

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def client_env(server: HubServer, base_env: dict, hf_home, token: str | None = None) -> dict:
    """Environment for a client subprocess that talks to `server` (set before huggingface_hub is imported)."""
    env = {k: v for k, v in base_env.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(hf_home),
               HF_HUB_CACHE=str(hf_home) + "/hub", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if token is not None:
        env["HF_TOKEN"] = token
    return env


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve a loopback Hugging Face Hub on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--token", default=None, help="the only token accepted for writes (default: any)")
    args = parser.parse_args()
    server = HubServer(args.token, args.port)
    print(f"HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
