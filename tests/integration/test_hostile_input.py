"""Hostile and broken requests against the running API: each gets a clear 4xx, and the API goes on
serving everyone else."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import SourceUnderTest

GOOD = b'{"userId": "u", "event": "Signed Up"}'


def nested(depth: int) -> bytes:
    return (
        b'{"userId": "u", "event": "Deep", "properties": {"p": '
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code"),
    [
        (nested(5000), {}, 400, "invalid_json"),  # deeper than any parser should go
        (nested(1020), {}, 400, "invalid_json"),  # within orjson's limit, beyond the strict check
        (b"[" * 400_000 + b"]" * 100_000, {}, 400, "invalid_json"),  # within 500 KB, unclosed
        (b'{"userId": "u", "event": "E", "properties": {"n": 1' + b"0" * 40 + b"}}", {}, 400,
         "number_too_large"),
        (b'{"userId": "u", "event": "E", "properties": {"n": 1e999}}', {}, 400, "invalid_json"),
        (b'{"userId": "u", "event": "\xff\xfe"}', {}, 400, "invalid_json"),  # not UTF-8
        (b'{"userId": "u", "event": "\\ud800"}', {}, 400, "invalid_json"),  # a lone surrogate
        (b'{"userId": "u", "userId": "v", "event": "E"}', {}, 400, "duplicate_key"),
        (b"<track user='u'/>", {"Content-Type": "application/xml"}, 400, "invalid_json"),
        (b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n",
         {"Content-Type": "multipart/form-data; boundary=x"}, 400, "invalid_json"),
        (b"userId=u&event=E", {"Content-Type": "application/x-www-form-urlencoded"}, 400,
         "invalid_json"),
        (GOOD, {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
        (GOOD, {"Content-Encoding": "gzip, gzip"}, 415, "unsupported_encoding"),
        (b"\x00" * 1000, {}, 400, "invalid_json"),
        (b"", {}, 400, "invalid_json"),
    ],
    ids=["nested-5000", "nested-1020", "unclosed-arrays", "huge-integer", "huge-float", "invalid-utf8",
         "lone-surrogate", "duplicate-key", "xml", "multipart", "form", "brotli", "double-gzip", "nul-bytes",
         "empty"],
)  # fmt: skip
def test_a_broken_body_gets_a_named_4xx(
    pipeline: str,
    source: SourceUnderTest,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = requests.post(
        f"{pipeline}/v1/track",
        data=raw,
        auth=(source.write_key, ""),
        headers={"Content-Type": "application/json", **headers},
        timeout=20,
    )

    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert still_serving(pipeline, source)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Padding": "x" * 100_000},  # one absurd header
        {f"X-Many-{i}": "x" for i in range(500)},  # absurdly many
        {"Authorization": "Basic " + "A" * 9000},  # an absurd credential
        {"Content-Length": "99999999999999999999"},
    ],
    ids=["huge-header", "500-headers", "huge-authorization", "absurd-content-length"],
)
def test_absurd_headers_get_a_4xx(
    pipeline: str, source: SourceUnderTest, headers: dict[str, str]
) -> None:
    status = raw_request(pipeline, "POST /v1/track", headers, GOOD)

    assert 400 <= status < 500
    assert still_serving(pipeline, source)


def test_an_absurd_url_gets_a_4xx(pipeline: str, source: SourceUnderTest) -> None:
    status = raw_request(pipeline, "GET /v1/sessions/" + "s" * 20_000, {}, b"")

    assert 400 <= status < 500
    assert still_serving(pipeline, source)


def test_a_body_shorter_than_announced_is_not_accepted(
    pipeline: str, source: SourceUnderTest
) -> None:
    """A client that announces more than it sends and hangs up: nothing queued, nothing hung."""
    host, port = address(pipeline)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\nConnection: close\r\n\r\n" + GOOD
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter_socket(sock))

    assert not answer.startswith(b"HTTP/1.1 200")
    assert still_serving(pipeline, source)


def test_a_chunked_body_over_the_limit_is_refused(pipeline: str, source: SourceUnderTest) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"batch": ['
        for _ in range(700):
            yield b'{"type": "track", "userId": "u", "event": "' + b"x" * 1000 + b'"},'
        yield b"{}]}"

    response = requests.post(
        f"{pipeline}/v1/batch",
        data=chunks(),
        auth=(source.write_key, ""),
        headers={"Content-Type": "application/json"},
        timeout=20,
    )

    assert response.status_code == 413, response.text
    assert response.json()["code"] == "request_too_large"
    assert still_serving(pipeline, source)


def still_serving(pipeline: str, source: SourceUnderTest) -> bool:
    response = requests.post(
        f"{pipeline}/v1/track",
        data=GOOD,
        auth=(source.write_key, ""),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    return response.status_code == 200


def address(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def raw_request(base: str, request_line: str, headers: dict[str, str], body: bytes) -> int:
    """The status of a request sent as raw bytes (HTTP clients refuse to send absurd ones)."""
    host, port = address(base)
    lines = [f"{request_line} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, port), timeout=10) as sock:
        # The server may answer and close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b"".join(iter_socket(sock))
    status_line = answer.split(b"\r\n", 1)[0].split()
    assert len(status_line) >= 2, answer[:200]
    return int(status_line[1])


def iter_socket(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return
        if not data:
            return
        yield data
