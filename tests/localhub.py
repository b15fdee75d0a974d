"""A local stand-in for the Hugging Face hub: point HF_ENDPOINT (or HTTP_PROXY) at it and the real clients download."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".msgpack", ".h5", ".pt", ".pth", ".onnx", ".gguf", ".pkl", ".npz")
LFS_MIN_SIZE = 10 * 1024 * 1024
RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
DATE = "2024-01-01T00:00:00.000Z"
CHUNK = 64 * 1024
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@dataclass
class Repo:
    """A git-like model repo: commits (sha -> {posix path: file on disk}) and refs ("main", "refs/pr/1") -> sha."""

    commits: dict[str, dict[str, Path]]
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """The commit sha a branch, full ref or sha names, or None."""
        if revision in self.refs:
            return self.refs[revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in self.refs:
            return self.refs[revision[len("refs/heads/") :]]
        return revision if revision in self.commits else None


@dataclass(frozen=True)
class Blob:
    """What the hub knows about one file: size, git blob sha1, and for LFS files the sha256 and pointer size."""

    path: Path
    size: int
    git_sha1: str
    sha256: str | None
    pointer_size: int | None


class HubError(Exception):
    """An error answer: status, X-Error-Code, message, and the commit to announce (EntryNotFound)."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


def is_lfs(name: str, size: int) -> bool:
    """Whether the hub would store this file with git LFS (weights, or anything of 10 MiB or more)."""
    return name.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


def ascii_header(text: str) -> str:
    """Text made safe for an HTTP header value."""
    return text.encode("ascii", "backslashreplace").decode().replace("\r", " ").replace("\n", " ").replace('"', "'")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """A threaded HTTP server on 127.0.0.1 speaking the subset of the hub API that huggingface_hub downloads use."""

    def __init__(self, repos: dict[str, Repo], port: int = 0):
        self.repos = repos
        self.port = port
        self.requests: list[dict] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._die: tuple[str, int] | None = None
        self._blobs: dict[tuple[Path, int, int], Blob] = {}

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT (or HTTP_PROXY)."""
        if not self.port:
            raise RuntimeError("LocalHub has no port before its first start()")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is listening now."""
        return self._server is not None

    def start(self) -> LocalHub:
        """Listen (again, on the same port after a stop) and serve in a daemon thread."""
        with self._lock:
            if self._server is not None:
                return self
            server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
            server.daemon_threads = True
            server.hub = self  # type: ignore[attr-defined]
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection, so clients see the hub as down."""
        with self._lock:
            server, thread, self._server, self._thread = self._server, self._thread, None, None
            if server is None:
                return
            server.shutdown()
            server.server_close()
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._conns.clear()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def die_after(self, path_suffix: str, nbytes: int) -> None:
        """Make the next GET of a file ending with path_suffix send nbytes of its body, then stop the whole hub."""
        with self._lock:
            self._die = (path_suffix, nbytes)

    def client_env(self, hf_home: Path, endpoint: str | None = None) -> dict[str, str]:
        """This process's environment for a client of the hub: its own cache, online, no proxy or token of ours."""
        env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARS}
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT"):
            env.pop(k, None)
        return env | {"HF_ENDPOINT": endpoint or self.url, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}

    def downloads(self) -> list[str]:
        """Every file body served by a GET (200 or 206), as "repo_id@sha:path", in order."""
        with self._lock:
            return [r["download"] for r in self.requests if r.get("download")]

    def _take_die(self, path: str) -> int | None:
        with self._lock:
            if self._die is not None and path.endswith(self._die[0]):
                nbytes, self._die = self._die[1], None
                return nbytes
        return None

    def _log(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def blob(self, path: Path, name: str) -> Blob:
        """Hashes of a file on disk, cached by (path, size, mtime)."""
        st = path.stat()
        key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._blobs:
                return self._blobs[key]
        data = path.read_bytes()
        if is_lfs(name, len(data)):
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
            blob = Blob(path, len(data), git_blob_sha1(pointer), sha256, len(pointer))
        else:
            blob = Blob(path, len(data), git_blob_sha1(data), None, None)
        with self._lock:
            self._blobs[key] = blob
        return blob

    def repo(self, repo_id: str) -> Repo:
        """The repo with this id, or a RepoNotFound error."""
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return self.repos[repo_id]

    def commit(self, repo: Repo, revision: str) -> str:
        """The sha a revision names in a repo, or a RevisionNotFound error."""
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha


class _Handler(BaseHTTPRequestHandler):
    """One connection: routes resolve, cdn and api requests to the hub's repos."""

    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1"

    @property
    def hub(self) -> LocalHub:
        return self.server.hub  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        with self.hub._lock:
            self.hub._conns.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))  # keep the connection usable
        self._serve()

    def _serve(self) -> None:
        body = self.command != "HEAD"
        target = self.path
        host = self.headers.get("Host", f"127.0.0.1:{self.hub.port}")
        if "://" in target.split("?", 1)[0]:  # absolute form: we are being used as an HTTP proxy
            parts = urlsplit(target)
            host, target = parts.netloc, parts.path + (f"?{parts.query}" if parts.query else "")
        raw_path, _, query = target.partition("?")
        self.entry = {
            "method": self.command,
            "target": self.path,
            "host": host,
            "path": unquote(raw_path),
            "query": query,
            "range": self.headers.get("Range"),
            "status": None,
        }
        self.origin = f"http://{host}"
        segs = [s for s in raw_path.split("/") if s]
        try:
            if self.command == "POST":
                raise HubError(404, None, f"Unsupported route: POST {unquote(raw_path)}")
            if segs[:1] == ["api"]:
                self._api(segs[1:], parse_qs(query))
            elif segs[:1] == ["cdn"]:
                self._cdn(segs[1:], body)
            elif "resolve" in segs[1:]:
                self._resolve(segs, body)
            else:
                raise HubError(404, None, f"Unsupported route: {unquote(raw_path)}")
        except HubError as e:
            self._error(e, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.hub._log(self.entry)

    # ---- routes

    def _resolve(self, segs: list[str], body: bool) -> None:
        i = segs.index("resolve", 1)
        repo_id = unquote("/".join(segs[:i]))
        repo = self.hub.repo(repo_id)
        sha, rest, revision = self._revision(repo, segs[i + 1 :])
        path = "/".join(unquote(s) for s in rest)
        files = repo.commits[sha]
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision!r}", commit=sha)
        blob = self.hub.blob(files[path], path)
        headers = {"X-Repo-Commit": sha}
        if blob.sha256 is not None:
            cdn = self._cdn_origin()
            location = f"{cdn}/cdn/{quote(repo_id, safe='')}/{sha}/{quote(path)}"
            text = f"Found. Redirecting to {location}".encode()
            headers.update(
                {
                    "Location": location,
                    "ETag": f'"{blob.git_sha1}"',
                    "X-Linked-Etag": f'"{blob.sha256}"',
                    "X-Linked-Size": str(blob.size),
                    "Content-Type": "text/plain; charset=utf-8",
                    "Content-Length": str(len(text)),
                }
            )
            self._send(302, headers, text if body else b"")
            return
        headers["ETag"] = f'"{blob.git_sha1}"'
        self._file(repo_id, sha, path, blob, headers, body)

    def _cdn(self, segs: list[str], body: bool) -> None:
        if len(segs) < 3:
            raise HubError(404, None, "Not found")
        repo_id, sha, path = unquote(segs[0]), segs[1], "/".join(unquote(s) for s in segs[2:])
        repo = self.hub.repos.get(repo_id)
        if repo is None or sha not in repo.commits or path not in repo.commits[sha]:
            raise HubError(404, None, "Not found")
        blob = self.hub.blob(repo.commits[sha][path], path)
        name = path.rsplit("/", 1)[-1]
        headers = {
            "ETag": f'"{blob.sha256 or blob.git_sha1}"',
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{ascii_header(name)}\";",
        }
        self._file(repo_id, sha, path, blob, headers, body)

    def _api(self, segs: list[str], query: dict[str, list[str]]) -> None:
        if segs[:1] != ["models"] or len(segs) < 2:
            raise HubError(404, None, f"Unsupported API route: /api/{unquote('/'.join(segs))}")
        segs = segs[1:]
        repo_id, rest = self._repo_id(segs)
        repo = self.hub.repo(repo_id)
        if not rest:
            self._json(self._model_info(repo_id, repo, "main", query))
        elif rest[0] == "revision" and len(rest) > 1:
            sha, extra, revision = self._revision(repo, rest[1:])
            if extra:
                raise HubError(404, None, f"Unsupported API route: {self.entry['path']}")
            self._json(self._model_info(repo_id, repo, revision, query))
        elif rest[0] == "tree" and len(rest) > 1:
            sha, extra, revision = self._revision(repo, rest[1:])
            self._json(self._tree(repo, sha, revision, "/".join(unquote(s) for s in extra), query))
        elif rest == ["refs"]:
            self._json(self._refs(repo))
        else:
            raise HubError(404, None, f"Unsupported API route: {self.entry['path']}")

    # ---- helpers

    def _repo_id(self, segs: list[str]) -> tuple[str, list[str]]:
        """Split api path segments into a repo id (known ones first, else the first two) and the rest."""
        for n in (2, 1):
            if len(segs) >= n and unquote("/".join(segs[:n])) in self.hub.repos:
                return unquote("/".join(segs[:n])), segs[n:]
        n = 2 if len(segs) >= 2 and segs[1] not in ("revision", "tree", "refs") else 1
        return unquote("/".join(segs[:n])), segs[n:]

    def _revision(self, repo: Repo, segs: list[str]) -> tuple[str, list[str], str]:
        """(sha, remaining segments, revision name) for url segments starting with a revision, encoded or not."""
        for n in range(1, min(len(segs), 4) + 1):
            name = "/".join(unquote(s) for s in segs[:n])
            sha = repo.resolve(name)
            if sha is not None:
                return sha, segs[n:], name
        return self.hub.commit(repo, unquote(segs[0]) if segs else ""), [], ""

    def _cdn_origin(self) -> str:
        """Another origin for LFS bodies, as the hub's CDN is: the client does not follow it on HEAD."""
        host, sep, port = self.origin[len("http://") :].rpartition(":")
        if not sep or not port.isdigit():
            host, sep, port = self.origin[len("http://") :], "", ""
        if host == "127.0.0.1":
            host = "localhost"
        elif host == "localhost":
            host = "127.0.0.1"
        else:
            host = f"cdn-lfs.{host}"
        return f"http://{host}{sep}{port}"

    def _model_info(self, repo_id: str, repo: Repo, revision: str, query: dict[str, list[str]]) -> dict:
        sha = self.hub.commit(repo, revision)
        files = repo.commits[sha]
        siblings = []
        for path in sorted(files):
            sib: dict = {"rfilename": path}
            if query.get("blobs", [""])[0].lower() in ("1", "true"):
                blob = self.hub.blob(files[path], path)
                sib.update(size=blob.size, blobId=blob.git_sha1)
                if blob.sha256 is not None:
                    sib["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
            siblings.append(sib)
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": sha,
            "lastModified": DATE,
            "createdAt": DATE,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(self.hub.blob(p, n).size for n, p in files.items()),
        }
        expand = query.get("expand") or query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id", *expand)}
        return info

    def _tree(self, repo: Repo, sha: str, revision: str, base: str, query: dict[str, list[str]]) -> list[dict]:
        recursive = query.get("recursive", [""])[0].lower() in ("1", "true")
        expand = query.get("expand", [""])[0].lower() in ("1", "true")
        files = repo.commits[sha]
        prefix = f"{base}/" if base else ""
        if base and base in files:
            raise HubError(404, "EntryNotFound", f"{base} is a file, not a folder, on {revision!r}", commit=sha)
        under = [p for p in files if p.startswith(prefix)]
        if base and not under:
            raise HubError(404, "EntryNotFound", f"{base} does not exist on {revision!r}", commit=sha)
        dirs: set[str] = set()
        entries = []
        for path in sorted(under):
            rel = path[len(prefix) :].split("/")
            for k in range(1, len(rel)):
                dirs.add(prefix + "/".join(rel[:k]))
            if len(rel) > 1 and not recursive:
                continue
            entries.append(self._file_entry(files, path))
        if not recursive:
            dirs = {d for d in dirs if "/" not in d[len(prefix) :]}
        for d in sorted(dirs):
            oid = hashlib.sha1(f"{sha}:{d}".encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": d})
        if expand:
            for entry in entries:
                entry["lastCommit"] = {"id": sha, "title": "local commit", "date": DATE}
        return sorted(entries, key=lambda e: (e["type"] != "directory", e["path"]))

    def _file_entry(self, files: dict, path: str) -> dict:
        blob = self.hub.blob(files[path], path)
        entry: dict = {"type": "file", "oid": blob.git_sha1, "size": blob.size, "path": path}
        if blob.sha256 is not None:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        return entry

    def _refs(self, repo: Repo) -> dict:
        def ref(name: str, full: str, sha: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": sha}

        branches = [ref(n, f"refs/heads/{n}", s) for n, s in repo.refs.items() if not n.startswith("refs/")]
        prs = [ref(n, n, s) for n, s in repo.refs.items() if n.startswith("refs/pr/")]
        tags = [ref(n[10:], n, s) for n, s in repo.refs.items() if n.startswith("refs/tags/")]
        return {"branches": branches, "converts": [], "tags": tags, "pullRequests": prs}

    # ---- responses

    def _file(self, repo_id: str, sha: str, path: str, blob: Blob, headers: dict[str, str], body: bool) -> None:
        size, start, end = blob.size, 0, blob.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            m = RANGE_RE.match(wanted)
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(size - int(m.group(2)), 0)
                if start >= size or start > end:
                    self._send(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"}, b"")
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        headers.update(
            {"Content-Length": str(length), "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        )
        if not body:
            self._send(status, headers, b"")
            return
        die = self.hub._take_die(path)
        self.entry["download"] = f"{repo_id}@{sha}:{path}"
        self._head(status, headers)
        sent = 0
        with open(blob.path, "rb") as f:
            f.seek(start)
            while sent < length:
                n = min(CHUNK, length - sent)
                if die is not None:
                    n = min(n, die - sent)
                    if n <= 0:
                        break
                self.wfile.write(f.read(n))
                sent += n
        self.wfile.flush()
        self.entry["bytes"] = sent
        if die is not None and sent < length:
            self.entry["died"] = True
            self.close_connection = True
            self.hub.stop()

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.entry["status"] = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        headers.setdefault("Content-Length", str(len(data)))
        self._head(status, headers)
        if data:
            self.wfile.write(data)

    def _json(self, obj: object) -> None:
        data = json.dumps(obj).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(data))}
        self._send(200, headers, data if self.command != "HEAD" else b"")

    def _error(self, e: HubError, body: bool) -> None:
        self.entry["error"] = e.code or "unsupported"
        data = json.dumps({"error": e.message}).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": ascii_header(e.message)}
        if e.code:
            headers["X-Error-Code"] = e.code
        if e.commit:
            headers["X-Repo-Commit"] = e.commit
        headers["Content-Length"] = str(len(data))
        self._send(e.status, headers, data if body else b"")
