"""A local HTTP server speaking the part of the Hub API that huggingface_hub's create_repo,
create_branch and upload_folder use (regular, non-LFS uploads), recording what arrives."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self):
        self.repos, self.files, self.requests, self.branches, self.validated = {}, {}, [], [], []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, payload):
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.requests.append((self.command, self.path, dict(self.headers)))
                parts = self.path.split("?")[0].strip("/").split("/")
                if self.path.startswith("/api/validate-yaml"):  # the README's metadata is checked before upload
                    hub.validated.append(json.loads(body)["content"])
                    return self._reply(200, {"errors": [], "warnings": []})
                if self.path.startswith("/api/repos/create"):
                    data = json.loads(body)
                    repo = (
                        f"{data.get('organization') or 'user'}/{data['name']}"
                        if "/" not in data["name"]
                        else data["name"]
                    )
                    hub.repos[repo] = data
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if len(parts) >= 5 and parts[0] == "api" and parts[1] == "models":
                    repo, action = f"{parts[2]}/{parts[3]}", parts[4]
                    if action == "branch":
                        hub.branches.append((repo, parts[5]))
                        return self._reply(200, {})
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._reply(
                            200,
                            {
                                "files": [
                                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                    for f in files
                                ]
                            },
                        )
                    if action == "commit":
                        for line in body.splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                v = item["value"]
                                hub.files[(repo, parts[5] if len(parts) > 5 else "main", v["path"])] = base64.b64decode(
                                    v["content"]
                                )
                        return self._reply(
                            200, {"commitUrl": f"{hub.url}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40}
                        )
                return self._reply(404, {"error": f"not faked: {self.path}"})

            def do_GET(self):
                hub.requests.append((self.command, self.path, dict(self.headers)))
                return self._reply(404, {"error": f"not faked: {self.path}"})

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
