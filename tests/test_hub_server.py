"""The loopback Hub itself, over plain HTTP (urllib): the error contract transformers relies on, listing, deletes."""

import base64
import hashlib
import json
import urllib.error
import urllib.request

import pytest

from hub_server import HubServer

TOKEN = "hf_serverSECRET_1"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


@pytest.fixture
def hub():
    server = HubServer(token=TOKEN).start()
    yield server
    server.stop()


def call(hub, method, path, body=None, token=TOKEN, content_type="application/json"):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(hub.url + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def commit(hub, repo, lines, rev="main"):
    payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return call(hub, "POST", f"/api/models/{repo}/commit/{rev}", payload, content_type="application/x-ndjson")


def test_error_codes_listing_lfs_and_delete(hub):
    assert call(hub, "GET", "/api/whoami-v2", token=None)[0] == 401
    assert call(hub, "GET", "/api/whoami-v2", token="hf_wrong")[0] == 401
    assert json.loads(call(hub, "GET", "/api/whoami-v2")[2])["name"] == "tester"
    assert call(hub, "POST", "/api/repos/create", {"name": "m"})[0] == 200
    status, _, body = call(hub, "POST", "/api/repos/create", {"name": "m"})
    assert status == 409 and json.loads(body)["url"].endswith("/tester/m")

    text = b'{"model_type": "bert"}'
    weights = b"\0weights" * 100
    oid = hashlib.sha256(weights).hexdigest()
    status, _, body = call(hub, "POST", "/api/models/tester/m/preupload/main", {"files": [
        {"path": "config.json", "sample": base64.b64encode(text).decode(), "size": len(text)},
        {"path": "model.safetensors", "sample": base64.b64encode(weights[:512]).decode(), "size": len(weights)}]})
    assert {f["path"]: f["uploadMode"] for f in json.loads(body)["files"]} == {"config.json": "regular",
                                                                              "model.safetensors": "lfs"}
    # an LFS file that was never uploaded makes the whole commit fail, and nothing of it lands
    status, _, _ = commit(hub, "tester/m", [
        {"key": "header", "value": {"summary": "broken"}},
        {"key": "file", "value": {"path": "config.json", "content": base64.b64encode(text).decode(), "encoding": "base64"}},
        {"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": oid}}])
    assert status == 422 and set(hub.files("tester/m")) == {".gitattributes"}
    batch = json.loads(call(hub, "POST", "/tester/m.git/info/lfs/objects/batch",
                            {"operation": "upload", "objects": [{"oid": oid, "size": len(weights)}]})[2])
    href = batch["objects"][0]["actions"]["upload"]["href"]
    assert call(hub, "PUT", href[len(hub.url):], b"tampered")[0] == 400  # sha256 is checked
    assert call(hub, "PUT", href[len(hub.url):], weights)[0] == 200
    status, _, body = commit(hub, "tester/m", [
        {"key": "header", "value": {"summary": "ok"}},
        {"key": "file", "value": {"path": "config.json", "content": base64.b64encode(text).decode(), "encoding": "base64"}},
        {"key": "lfsFile", "value": {"path": "sub/model.safetensors", "algo": "sha256", "oid": oid}}])
    assert status == 200
    sha = json.loads(body)["commitOid"]

    status, headers, body = call(hub, "GET", "/tester/m/resolve/main/sub/model.safetensors")
    assert status == 200 and body == weights and headers["X-Repo-Commit"] == sha
    assert headers["X-Linked-Etag"] == f'"{oid}"' and headers["X-Linked-Size"] == str(len(weights))
    status, headers, body = call(hub, "HEAD", "/tester/m/resolve/main/config.json")
    assert status == 200 and headers["ETag"].strip('"') == hashlib.sha1(b"blob %d\0" % len(text) + text).hexdigest()
    assert call(hub, "GET", "/tester/m/resolve/main/config.json")[2] == text
    request = urllib.request.Request(hub.url + "/tester/m/resolve/main/config.json", headers={"Range": "bytes=2-5"})
    with OPENER.open(request, timeout=10) as response:
        assert response.status == 206 and response.read() == text[2:6]
    # the 404 contract transformers relies on when it probes optional files
    for path, code in (("/tester/m/resolve/main/missing.json", "EntryNotFound"),
                       ("/tester/m/resolve/nobranch/config.json", "RevisionNotFound"),
                       ("/tester/none/resolve/main/config.json", "RepoNotFound")):
        status, headers, _ = call(hub, "HEAD", path)
        assert (status, headers.get("X-Error-Code")) == (404, code), path

    tree = json.loads(call(hub, "GET", "/api/models/tester/m/tree/main")[2])
    assert {(e["type"], e["path"]) for e in tree} == {("file", ".gitattributes"), ("file", "config.json"),
                                                      ("directory", "sub")}
    tree = json.loads(call(hub, "GET", "/api/models/tester/m/tree/main?recursive=true")[2])
    assert ("file", "sub/model.safetensors") in {(e["type"], e["path"]) for e in tree}
    info = json.loads(call(hub, "POST", "/api/models/tester/m/paths-info/main", b"paths=sub%2Fmodel.safetensors&paths=nope",
                           content_type="application/x-www-form-urlencoded")[2])
    assert [(e["path"], e["lfs"]["oid"]) for e in info] == [("sub/model.safetensors", oid)]
    model = json.loads(call(hub, "GET", "/api/models/tester/m")[2])
    assert model["sha"] == sha and {s["rfilename"] for s in model["siblings"]} >= {"config.json", "sub/model.safetensors"}

    assert commit(hub, "tester/m", [{"key": "header", "value": {"summary": "rm"}},
                                    {"key": "deletedFolder", "value": {"path": "sub"}}])[0] == 200
    assert "sub/model.safetensors" not in hub.files("tester/m")
    assert call(hub, "DELETE", "/api/repos/delete", {"name": "m"}, token=None)[0] == 401
    assert call(hub, "DELETE", "/api/repos/delete", {"name": "m"})[0] == 200
    assert call(hub, "GET", "/api/models/tester/m")[0] == 404


def test_injected_failures_hit_only_their_route(hub):
    hub.fail_next("whoami", 2, 502)
    assert [call(hub, "GET", "/api/whoami-v2")[0] for _ in range(3)] == [502, 502, 200]
    assert [status for _, route, status in hub.requests if route == "whoami"] == [502, 502, 200]
