"""The search page, `python -m pipeline.serve`, driven over HTTP (urllib) as a
user's browser would: start page, uploads (a training image finds itself first;
non-images, oversized and malformed uploads are refused with a readable page),
the worst-queries view, the epoch switch, thumbnails, 404 and 405.

The server is the real command in a subprocess (see ``tests/serve_setup.py``),
stopped after the session whatever happens.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data.pixel_store import open_store
from pipeline.serve.uploads import UploadError, parse_multipart

pytest.register_assert_rewrite("tests.serve_setup")  # before its import: it is also a plugin below
from tests.serve_setup import (
    EXPERIMENT,
    REPO,
    Experiment,
    Server,
    env,
    serve_command,
    training_file,
)

# The fixtures `searchable` and `server` (shared with the browser test: one experiment and server per session).
pytest_plugins = ["tests.serve_setup"]

CLI_TIMEOUT = 120


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def fetch(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
          method: str | None = None) -> Reply:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return Reply(reply.status, reply.headers, reply.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())


def multipart(filename: str, data: bytes, field: str = "image") -> tuple[bytes, str]:
    """A form body with one file field, as a browser sends it."""
    boundary = "----test-boundary-7MA4YWxkTrZu0gW"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(server: Server, filename: str, data: bytes, epoch: int | None = None) -> Reply:
    body, ctype = multipart(filename, data)
    query = f"?epoch={epoch}" if epoch is not None else ""
    return fetch(server.url + "search" + query, data=body, headers={"Content-Type": ctype})


def hits(page: str) -> list[tuple[int, str, float]]:
    """(image id, class, distance) of each result on a results page, nearest first."""
    results = page.split('id="results"', 1)[1].split("</ol>", 1)[0]
    found = re.findall(r'<li[^>]*data-image-id="(\d+)" data-class="([^"]*)".*?d = ([0-9.]+)', results)
    return [(int(i), c, float(d)) for i, c, d in found]


# -- pages -----------------------------------------------------------------


def test_start_page_has_the_upload_form_and_the_epoch_switch(server: Server):
    reply = fetch(server.url)
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    assert 'enctype="multipart/form-data"' in reply.text and 'type="file" name="image"' in reply.text
    assert 'action="/search?epoch=2"' in reply.text  # the last indexed epoch by default
    assert re.findall(r'<option value="(\d+)"', reply.text) == ["1", "2"]
    assert '<option value="2" selected>' in reply.text
    assert "among the 36 train images" in reply.text
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src" not in reply.headers["Content-Security-Policy"]  # default-src 'self': no inline script


@pytest.mark.parametrize("mode", ["RGB", "CMYK", "L"])
def test_an_uploaded_training_image_finds_itself_first(server: Server, mode: str):
    image_id, path = training_file(server.experiment, mode)
    reply = upload(server, path.name, path.read_bytes())
    assert reply.status == 200, reply.text
    found = hits(reply.text)
    assert len(found) == 10
    first_id, first_class, first_distance = found[0]
    items = server.experiment.items.set_index("image_id")
    assert (first_id, first_class) == (image_id, items.loc[image_id, "class_name"])
    assert first_distance < 1e-3
    assert [d for _, _, d in found] == sorted(d for _, _, d in found)
    assert f'id="query-name">{path.name}<' in reply.text
    assert 'src="data:image/png;base64,' in reply.text  # the upload's preview


def test_a_non_image_upload_is_refused_with_a_message(server: Server):
    reply = upload(server, "notes.txt", b"these are notes, not pixels\n" * 20)
    assert reply.status == 400
    assert "&#x27;notes.txt&#x27; is not an image this page can read" in reply.text
    assert 'id="error"' in reply.text and 'href="/?epoch=2"' in reply.text


def test_upload_names_from_the_request_are_escaped(server: Server):
    reply = upload(server, "<script>alert(1)</script>.txt", b"not an image")
    assert reply.status == 400
    assert "<script>alert" not in reply.text and "&lt;script&gt;alert(1)&lt;/script&gt;.txt" in reply.text


def test_an_oversized_upload_is_refused_and_the_connection_survives(server: Server):
    reply = upload(server, "big.jpg", bytes(80_000))
    assert reply.status == 413
    assert "over this server&#x27;s limit of 0.05 MB" in reply.text and "--max-upload-mb" in reply.text
    assert fetch(server.url).status == 200


@pytest.mark.parametrize("body, ctype, message", [
    (b"image=abc", "application/x-www-form-urlencoded", "expected a multipart/form-data upload"),
    (multipart("a.png", b"")[0], multipart("a.png", b"")[1], "is empty (0 bytes)"),
    (multipart("a.png", b"x", field="other")[0], multipart("a.png", b"x")[1], "has no file field"),
    (multipart("a.png", b"x")[0][:-30], multipart("a.png", b"x")[1], "truncated"),
])
def test_malformed_uploads_are_refused(server: Server, body: bytes, ctype: str, message: str):
    reply = fetch(server.url + "search", data=body, headers={"Content-Type": ctype})
    assert reply.status in (400, 415)
    assert message in reply.text


def test_the_worst_queries_page_lists_validation_queries_lowest_precision_first(server: Server):
    reply = fetch(server.url + "queries?epoch=2")
    assert reply.status == 200
    sidecar = pd.read_parquet(server.experiment.root / EXPERIMENT / "metrics" / "queries/epoch-002.parquet")
    rows = re.findall(r'<div class="row" data-image-id="(\d+)" data-precision="([0-9.]+)"', reply.text)
    expected = sidecar.sort_values(["precision", "image_id"], kind="stable")
    assert [int(i) for i, _ in rows] == expected["image_id"].tolist()[:20]
    assert [float(p) for _, p in rows] == pytest.approx(expected["precision"].tolist()[:20])
    first = reply.text.split('<div class="row"', 2)[1]  # the worst query's neighbours, in the file's order
    shown = [int(i) for i in re.findall(r'<li class="(?:right|wrong)" data-image-id="(\d+)"', first)]
    assert shown == list(expected.iloc[0]["neighbors"])
    assert "precision@30" in reply.text


def test_an_epoch_without_per_query_results_says_how_to_make_them(server: Server):
    reply = fetch(server.url + "queries?epoch=1")
    assert reply.status == 200
    assert 'id="no-queries"' in reply.text and "queries/epoch-001.parquet" in reply.text
    assert "luigi --module tasks ValidateEpoch --experiment test --epoch 1" in reply.text


def test_the_epoch_switch_searches_with_the_chosen_epoch(server: Server):
    page = fetch(server.url + "?epoch=1")
    assert page.status == 200 and '<option value="1" selected>' in page.text
    assert 'action="/search?epoch=1"' in page.text
    image_id, path = training_file(server.experiment, "RGB")
    one, two = (hits(upload(server, path.name, path.read_bytes(), epoch=e).text) for e in (1, 2))
    assert one[0][0] == two[0][0] == image_id
    assert [d for *_, d in one] != [d for *_, d in two]  # each epoch's own network and index
    missing = fetch(server.url + "?epoch=7")
    assert missing.status == 404
    assert "epoch 7 of experiment &#x27;test&#x27; has no search index (indexed epochs: 1-2)" in missing.text
    assert "luigi --module tasks SearchIndex --experiment test --epoch 7" in missing.text
    assert fetch(server.url + "?epoch=x").status == 400


def test_a_dataset_image_page_shows_its_neighbours(server: Server):
    image_id, _ = training_file(server.experiment, "RGB")
    reply = fetch(server.url + f"image/{image_id}?epoch=2")
    assert reply.status == 200
    assert hits(reply.text)[0][0] == image_id
    assert fetch(server.url + "image/99999?epoch=2").status == 404


def test_thumbnails_show_the_stored_pixels(server: Server):
    image_id, _ = training_file(server.experiment, "RGB")
    reply = fetch(server.url + f"thumb/2/{image_id}.png")
    assert reply.status == 200 and reply.headers["Content-Type"] == "image/png"
    thumb = np.asarray(Image.open(io.BytesIO(reply.body)).convert("RGB"))
    assert thumb.shape == (96, 96, 3)
    stored = open_store(server.experiment.root / "datasets" / "tiny-imagenet-16px")[image_id]
    small = np.asarray(Image.fromarray(thumb).resize(stored.shape[:2], Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(small - stored).mean() < 8.0
    for bad in ("thumb/2/99999.png", "thumb/9/0.png", "thumb/2/abc.png", "thumb/2/..%2F..%2Fserve.css",
                "static/../app.py", "static/%2e%2e/app.py"):
        assert fetch(server.url + bad).status == 404, bad


def test_unknown_routes_are_404_and_wrong_methods_405(server: Server):
    missing = fetch(server.url + "no/such/page")
    assert missing.status == 404 and "there is no page at /no/such/page" in missing.text
    posted = fetch(server.url, data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status == 405 and posted.headers["Allow"] == "GET, HEAD"
    got = fetch(server.url + "search")
    assert got.status == 405 and got.headers["Allow"] == "POST"
    assert fetch(server.url + "queries", method="DELETE").status == 405
    head = fetch(server.url, method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 0


def test_requests_for_other_host_names_are_refused(server: Server):
    assert fetch(server.url, headers={"Host": "attacker.example:8765"}).status == 421
    assert fetch(server.url.replace("127.0.0.1", "localhost")).status == 200


# -- the command's failures -------------------------------------------------


def test_the_command_fails_clearly(searchable: Experiment):
    """No such experiment, an epoch without an index, a port in use: exit 2 with ``error: ...``."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        commands = {"experiment": serve_command(searchable.root, "--port", "0", experiment="nope"),
                    "epoch": serve_command(searchable.root, "--epoch", "5", "--port", "0"),
                    "port": serve_command(searchable.root, "--port", str(port))}
        # Started together: each spends most of its time importing torch.
        procs = {name: subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for name, cmd in commands.items()}
        try:
            outcomes = {name: (*p.communicate(timeout=CLI_TIMEOUT), p.returncode) for name, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for out, err, code in outcomes.values():
        assert code == 2 and out == "" and err.startswith("error: "), err
    assert "experiment 'nope' does not exist" in outcomes["experiment"][1]
    assert "epoch 5 of experiment 'test' is not trained" in outcomes["epoch"][1]
    assert f"cannot listen on 127.0.0.1:{port}" in outcomes["port"][1] and "--port" in outcomes["port"][1]


# -- multipart parsing ------------------------------------------------------


def test_multipart_parsing_keeps_binary_data_and_quoted_names():
    data = b"\r\n--not-the-boundary\r\n\x00\xff" * 3
    body = (b'preamble\r\n--XyZ\r\nContent-Disposition: form-data; name="k"\r\n\r\n12\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a; b \\"c\\".png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--XyZ--\r\nepilogue")
    fields = parse_multipart(body, 'multipart/form-data; boundary="XyZ"')
    assert fields["k"].data == b"12" and fields["k"].filename is None
    assert fields["image"].data == data and fields["image"].filename == 'a; b "c".png'
    assert fields["image"].content_type == "image/png"
    with pytest.raises(UploadError, match="no valid boundary"):
        parse_multipart(body, "multipart/form-data")
    with pytest.raises(UploadError, match="truncated"):
        parse_multipart(body[:-20], "multipart/form-data; boundary=XyZ")


def test_open_epochs_are_reused_until_their_index_is_rebuilt(searchable: Experiment):
    from pipeline.serve.service import SearchService

    service = SearchService(searchable.root, EXPERIMENT)
    assert service.epochs() == [1, 2] and service.latest_epoch() == 2
    first = service.searcher(2)
    assert service.searcher(2) is first and service.searcher(1) is not first
    meta = searchable.root / EXPERIMENT / "search" / "epoch-002" / "meta.json"
    stat = meta.stat()
    os.utime(meta, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # what a rebuild's new file looks like
    try:
        assert service.searcher(2) is not first
    finally:
        os.utime(meta, ns=(stat.st_atime_ns, stat.st_mtime_ns))
