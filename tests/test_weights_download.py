"""Offline tests for yolov3.weights against a loopback HTTP server (no internet access)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from yolov3.darknet.official_weights import (
    OFFICIAL_WEIGHTS,
    WeightsDownloadError,
    WeightsFile,
    default_weights_directory,
    download_weights,
)
from yolov3.weights import main

PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServedRequest:
    range_header: str | None
    bytes_sent: int


@dataclass
class LoopbackServer:
    base_url: str
    requests: list[ServedRequest] = field(default_factory=list)
    honour_range: bool = True
    body: bytes = PAYLOAD

    def entry(self, name: str = "test-weights") -> WeightsFile:
        return WeightsFile(name, "test.weights", self.base_url + "/test.weights", len(PAYLOAD), PAYLOAD_SHA256)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    state = LoopbackServer(base_url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            start = 0
            if state.honour_range and range_header and range_header.startswith("bytes="):
                start = int(range_header.removeprefix("bytes=").split("-")[0])
            body = state.body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(state.body) - 1}/{len(state.body)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            state.requests.append(ServedRequest(range_header, len(body)))  # before the client can finish
            self.wfile.write(body)

        def log_message(self, format: str, *arguments: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_fresh_download_is_verified_and_atomic(server: LoopbackServer, tmp_path: Path) -> None:
    path = download_weights(server.entry(), tmp_path, progress=False)
    assert path == tmp_path / "test.weights"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "test.weights.part").exists()
    assert [request.range_header for request in server.requests] == [None]


def test_resume_requests_only_the_remainder(server: LoopbackServer, tmp_path: Path) -> None:
    already_downloaded = 100_000
    (tmp_path / "test.weights.part").write_bytes(PAYLOAD[:already_downloaded])
    path = download_weights(server.entry(), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [ServedRequest(f"bytes={already_downloaded}-", len(PAYLOAD) - already_downloaded)]
    assert not (tmp_path / "test.weights.part").exists()


def test_server_ignoring_range_restarts_from_zero(server: LoopbackServer, tmp_path: Path) -> None:
    server.honour_range = False
    (tmp_path / "test.weights.part").write_bytes(b"stale bytes that must be discarded")
    path = download_weights(server.entry(), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[0].bytes_sent == len(PAYLOAD)


def test_corrupted_payload_raises_and_removes_part(server: LoopbackServer, tmp_path: Path) -> None:
    corrupted = bytearray(PAYLOAD)
    corrupted[1234] ^= 0xFF
    server.body = bytes(corrupted)
    with pytest.raises(WeightsDownloadError) as raised:
        download_weights(server.entry(), tmp_path, progress=False)
    message = str(raised.value)
    assert PAYLOAD_SHA256 in message
    assert hashlib.sha256(corrupted).hexdigest() in message
    assert not (tmp_path / "test.weights.part").exists()
    assert not (tmp_path / "test.weights").exists()


def test_unreachable_host_explains_manual_placement(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/test.weights"
    entry = WeightsFile("offline", "test.weights", url, len(PAYLOAD), PAYLOAD_SHA256)
    with pytest.raises(WeightsDownloadError) as raised:
        download_weights(entry, tmp_path, progress=False)
    message = str(raised.value)
    assert "Could not reach the host" in message
    assert url in message
    assert str(tmp_path / "test.weights") in message


def test_existing_valid_file_makes_no_request(server: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "test.weights").write_bytes(PAYLOAD)
    path = download_weights(server.entry(), tmp_path, progress=False)
    assert path == tmp_path / "test.weights"
    assert server.requests == []


def test_unknown_name_suggests_closest_match(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Did you mean 'yolov3-tiny'") as raised:
        download_weights("yolov3tiny", tmp_path)
    assert all(name in str(raised.value) for name in OFFICIAL_WEIGHTS)


def test_cli_error_is_one_line_and_exit_code_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "yolov3tiny", "--dir", str(tmp_path)]) == 2
    error_output = capsys.readouterr().err.strip()
    assert error_output.startswith("error: Unknown weights name") and "\n" not in error_output


def test_cli_list_shows_all_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--dir", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert all(name in output for name in ("yolov3", "yolov3-tiny", "yolov3-spp", "darknet53.conv.74"))


def test_default_directory_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("YOLOV3_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_weights_directory() == tmp_path / "cache" / "yolov3" / "weights"
    monkeypatch.setenv("YOLOV3_WEIGHTS_DIR", str(tmp_path / "explicit"))
    assert default_weights_directory() == tmp_path / "explicit"


def test_sha256sums_file_matches_table() -> None:
    listed = {}
    for line in (REPOSITORY_ROOT / "weights" / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            checksum, filename = line.split("  ", 1)
            listed[filename] = checksum
    expected = {entry.filename: entry.sha256 for entry in OFFICIAL_WEIGHTS.values() if entry.sha256}
    assert listed == expected
