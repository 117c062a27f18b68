"""A local stand-in for the Hugging Face Hub's download API, for `daemon/tests/pull.rs`: the
network is not reachable here, so the tests point HF_ENDPOINT at this. It serves what clients
use, as the Hub answers it (huggingface_hub's own client talks to it in the tests too):

  GET  /api/models/OWNER/NAME/revision/REV[?blobs=true]   listing: sha, siblings (rfilename;
       with blobs=true also size, blobId and lfs {sha256, size, pointerSize})
  GET  /api/models/OWNER/NAME/tree/REV?recursive=true   the same as tree entries (what
       huggingface_hub's snapshot_download lists with)
  HEAD|GET /OWNER/NAME/resolve/REV/PATH   small files: the content, ETag = git blob sha1;
       LFS files (.onnx, .onnx_data, >= 1 KiB): 302 to an absolute CDN URL on another host name
       (localhost instead of 127.0.0.1) with X-Linked-Etag (sha256), X-Linked-Size, X-Repo-Commit
  GET  /cdn/SHA256   the LFS content, with Range support (206 / 416)

Options: --repo OWNER/NAME=DIR (every file under DIR), --token T (401 without it on the API and
resolve routes), --fault drop:PATH:BYTES (the first transfer of PATH breaks after BYTES),
--fault corrupt:PATH (PATH's bytes are served with one byte changed), --log FILE (one JSON line
per request: method, path, range, whether an Authorization header came, status). Prints
"PORT <n>" once listening on 127.0.0.1.
"""

import argparse
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".onnx", ".onnx_data", ".data")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, name: str, root: str):
        self.name = name
        self.files = {}
        for dirpath, _, names in os.walk(root):
            for n in sorted(names):
                full = os.path.join(dirpath, n)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                data = open(full, "rb").read()
                entry = {"data": data, "size": len(data)}
                if rel.endswith(LFS_SUFFIXES) or len(data) >= 1024:
                    sha = hashlib.sha256(data).hexdigest()
                    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
                    entry.update(sha256=sha, blob_id=git_blob_id(pointer), pointer_size=len(pointer))
                else:
                    entry.update(blob_id=git_blob_id(data))
                self.files[rel] = entry
        listing = json.dumps(sorted((p, e["blob_id"]) for p, e in self.files.items())).encode()
        self.commit = hashlib.sha1(name.encode() + listing).hexdigest()


class State:
    repos: dict = {}
    by_sha: dict = {}
    token = None
    drops: dict = {}
    corrupt: set = set()
    log = None
    lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, status: int):
        if State.log:
            with State.lock, open(State.log, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                                    "auth": self.headers.get("Authorization") is not None, "status": status}) + "\n")

    def reply(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.record(status)
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def authorized(self) -> bool:
        if State.token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {State.token}":
            return True
        self.reply(401, b'{"error":"Invalid credentials in Authorization header"}', {"Content-Type": "application/json"})
        return False

    def repo_and_rev(self, owner, name, rev):
        repo = State.repos.get(f"{owner}/{name}")
        if repo is None or rev not in ("main", repo.commit):
            self.reply(404, b'{"error":"Repository Not Found"}', {"Content-Type": "application/json"})
            return None
        return repo

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
            if not self.authorized():
                return
            repo = self.repo_and_rev(parts[2], parts[3], "/".join(parts[5:]))
            if repo is None:
                return
            blobs = parse_qs(url.query).get("blobs") == ["true"]
            siblings = []
            for p, e in sorted(repo.files.items()):
                s = {"rfilename": p}
                if blobs:
                    s.update(size=e["size"], blobId=e["blob_id"])
                    if "sha256" in e:
                        s["lfs"] = {"sha256": e["sha256"], "size": e["size"], "pointerSize": e["pointer_size"]}
                siblings.append(s)
            body = json.dumps({"_id": "x", "id": repo.name, "modelId": repo.name, "sha": repo.commit,
                               "private": False, "gated": False, "disabled": False, "siblings": siblings,
                               "lastModified": "2026-11-30T00:00:00.000Z", "tags": []}).encode()
            return self.reply(200, body, {"Content-Type": "application/json"})
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            if not self.authorized():
                return
            repo = self.repo_and_rev(parts[2], parts[3], parts[5])
            if repo is None:
                return
            entries, dirs = [], set()
            for p, e in sorted(repo.files.items()):
                for i in range(1, p.count("/") + 1):
                    dirs.add("/".join(p.split("/")[:i]))
                entry = {"type": "file", "oid": e["blob_id"], "size": e["size"], "path": p}
                if "sha256" in e:
                    entry["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": e["pointer_size"]}
                entries.append(entry)
            entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)]
            return self.reply(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
        if len(parts) >= 5 and parts[2] == "resolve":
            if not self.authorized():
                return
            repo = self.repo_and_rev(parts[0], parts[1], parts[3])
            if repo is None:
                return
            path = "/".join(parts[4:])
            e = repo.files.get(path)
            if e is None:
                return self.reply(404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"})
            common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
            if "sha256" in e:
                host = self.headers.get("Host", "127.0.0.1").replace("127.0.0.1", "localhost")
                return self.reply(302, b"", {**common, "Location": f"http://{host}/cdn/{e['sha256']}?path={path}",
                                             "X-Linked-Etag": f'"{e["sha256"]}"', "X-Linked-Size": e["size"],
                                             "ETag": f'"{e["blob_id"]}"'})
            return self.content(path, e["data"], {**common, "ETag": f'"{e["blob_id"]}"'})
        if len(parts) == 2 and parts[0] == "cdn" and parts[1] in State.by_sha:
            path, data = State.by_sha[parts[1]]
            return self.content(path, data, {"ETag": f'"{parts[1]}"', "Accept-Ranges": "bytes"})
        self.reply(404, b"not found")

    def content(self, path: str, data: bytes, headers: dict):
        if path in State.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start = int(first or 0)
            end = int(last) if last else len(data) - 1
            if start >= len(data):
                return self.reply(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            end = min(end, len(data) - 1)
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            data = data[start:end + 1]
            status = 206
        drop = None
        if self.command == "GET":
            with State.lock:
                drop = State.drops.pop(path, None)
        if drop is None:
            return self.reply(status, data, headers)
        # Announce the whole body, send part of it, and hang up.
        self.record(status)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:max(0, drop - start)])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(2)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client hanging up mid-transfer (or the drop fault doing so) is not a server error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", action="append", default=[])
    ap.add_argument("--token")
    ap.add_argument("--fault", action="append", default=[])
    ap.add_argument("--log")
    args = ap.parse_args()
    for spec in args.repo:
        name, root = spec.split("=", 1)
        repo = Repo(name, root)
        State.repos[name] = repo
        for p, e in repo.files.items():
            if "sha256" in e:
                State.by_sha[e["sha256"]] = (p, e["data"])
    State.token = args.token
    State.log = args.log
    for fault in args.fault:
        kind, _, rest = fault.partition(":")
        if kind == "drop":
            path, _, n = rest.rpartition(":")
            State.drops[path] = int(n)
        elif kind == "corrupt":
            State.corrupt.add(rest)
    server = Server(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
