"""Hostile and broken requests against the running API: each gets a clear 4xx, and the API goes on
serving everyone else."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from tests.integration.conftest import SourceUnderTest
from tests.support.infra import KafkaCollector

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


def test_an_event_nested_too_deep_costs_no_request_grouped_with_it(
    pipeline: str, source: SourceUnderTest, kafka: KafkaCollector
) -> None:
    """Sent at the same moment as 30 ordinary requests, which the API groups with it into
    queue messages: it gets a 400 naming its field, and every other one is a 200 and in Kafka."""
    deep = nested(300)  # within what the parsers take, beyond what a message may carry
    ids = [str(uuid.uuid4()) for _ in range(30)]
    start = threading.Barrier(31)

    def send(body: bytes) -> requests.Response:
        start.wait(10)
        return requests.post(
            f"{pipeline}/v1/track",
            data=body,
            auth=(source.write_key, ""),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )

    ordinary = [orjson.dumps({"userId": "u", "event": "Signed Up", "messageId": i}) for i in ids]
    with ThreadPoolExecutor(31) as pool:
        refused = pool.submit(send, deep)
        others = list(pool.map(send, ordinary))

    assert [r.status_code for r in others] == [200] * 30, [r.text for r in others]
    answer = refused.result()
    assert (answer.status_code, answer.json()["code"]) == (400, "too_deep"), answer.text
    assert answer.json()["field"] == "properties"
    assert set(kafka.wait_for(ids)) == set(ids)


def test_a_schemaver_of_thousands_of_digits_is_an_invalid_event_not_a_500(
    pipeline: str, source: SourceUnderTest
) -> None:
    event = {
        "type": "track",
        "userId": "u",
        "event": "Signed Up",
        "context": {"schema": "signed_up/1-0-" + "9" * 5000},
    }

    response = requests.post(
        f"{pipeline}/v1/validate", json=event, auth=(source.write_key, ""), timeout=20
    )

    assert response.status_code == 200, response.text
    assert response.json()["valid"] is False
    assert response.json()["results"][0]["errors"][0]["path"] == "/context/schema"


def flask_series(base: str) -> set[str]:
    text = requests.get(f"{base}/metrics", timeout=10).text
    return {
        line.split(" ")[0] for line in text.splitlines() if line.startswith("flask_http_request")
    }


def test_made_up_methods_and_paths_add_no_metric_series(pipeline: str) -> None:
    def send(method: str, path: str) -> int:
        return requests.request(method, f"{pipeline}{path}", timeout=10).status_code

    # The first of each kind makes the series every later one shares (in each API process).
    warm = {send("ZZ0", "/v1/track") for _ in range(8)} | {send("QQ0", "/nope") for _ in range(8)}
    warm |= {send("GET", "/nope") for _ in range(8)}
    before = flask_series(pipeline)
    sent = {send(f"ZZ{n}", "/v1/track") for n in range(1, 31)}
    sent |= {send(f"QQ{n}", f"/nope-{n}") for n in range(1, 31)}
    sent |= {send("GET", f"/nope/{n}") for n in range(1, 31)}
    after = flask_series(pipeline)

    assert warm == sent == {404, 405}
    assert after == before, sorted(after - before)[:10]
    assert not [s for s in after if "ZZ" in s or "QQ" in s or "nope" in s]
