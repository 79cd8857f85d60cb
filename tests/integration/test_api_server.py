"""The API's server as ``clicktrail api`` runs it: a stop lets the requests under way finish,
request heads are bounded in size and in time, and a process that dies is replaced."""

from __future__ import annotations

import base64
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
import requests

from clicktrail.web.server import GRACEFUL_SECONDS, HEAD_SECONDS
from tests.integration.conftest import SourceUnderTest
from tests.support.infra import Service, free_port, start_api, wait_for


@pytest.fixture
def own_api(stack_env: dict[str, str], logs_dir: Path) -> Iterator[tuple[Service, str]]:
    name = f"server-{uuid.uuid4().hex[:6]}"
    api, base = start_api(stack_env, logs_dir / f"{name}.log", name=name)
    yield api, base
    api.stop()


def address(base: str) -> tuple[str, int]:
    host, _, port = base.removeprefix("http://").partition(":")
    return host, int(port)


def head(base: str, path: str, write_key: str, length: int) -> bytes:
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {address(base)[0]}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def status_of(connection: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = connection.recv(4096)
        if not chunk:
            raise AssertionError(f"the connection closed after {answer!r}")
        answer += chunk
    return int(answer.split(b" ", 2)[1])


def refuses_connections(base: str) -> bool:
    try:
        socket.create_connection(address(base), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_stop_lets_the_requests_under_way_finish_and_takes_no_new_ones(
    own_api: tuple[Service, str], source: SourceUnderTest
) -> None:
    api, base = own_api
    body = orjson.dumps(
        {"userId": "u1", "event": "Stopped Midway", "messageId": f"stop-{uuid.uuid4()}"}
    )
    under_way = socket.create_connection(address(base), timeout=GRACEFUL_SECONDS)
    under_way.sendall(head(base, "/v1/track", source.write_key, len(body)) + body[:10])
    time.sleep(0.5)  # the request is in the app, reading its body

    os.kill(api.proc.pid, signal.SIGTERM)  # as a supervisor stops it: the main process only
    deadline = time.monotonic() + 5
    while not refuses_connections(base):
        assert time.monotonic() < deadline, "the stopping API still takes connections"
        time.sleep(0.1)
    under_way.sendall(body[10:])

    assert status_of(under_way) == 200
    assert api.proc.wait(GRACEFUL_SECONDS + 10) == 0


def test_a_stop_while_the_processes_load_the_app_stops_them_at_once(
    stack_env: dict[str, str], logs_dir: Path
) -> None:
    env = {**stack_env, "API_BIND": f"127.0.0.1:{free_port()}"}
    api = Service(
        "loading-api",
        [sys.executable, "-m", "clicktrail", "api"],
        env,
        logs_dir / "loading-api.log",
    )
    # Once every process is loading the app (a stop in the instant between a process's start
    # and then reaches the handlers it inherited, and waits out the graceful stop).
    workers = int(env.get("API_WORKERS", "2"))
    wait_for(lambda: api.output().count("loading the app") >= workers, "the processes loading")
    began = time.monotonic()

    os.killpg(api.proc.pid, signal.SIGTERM)  # as Ctrl-C reaches every process of the group

    # 1 when a process died of the signal before the main process stopped it: granian counts
    # that as a process lost. Either way, at once rather than after the graceful timeout.
    assert api.proc.wait(GRACEFUL_SECONDS + 10) in (0, 1)
    assert time.monotonic() - began < GRACEFUL_SECONDS / 2, api.output()[-2000:]
    assert "refused to gracefully stop" not in api.output()


def test_request_heads_are_bounded_in_size_and_in_time(api: str, source: SourceUnderTest) -> None:
    def answer(extra_headers: bytes) -> int:
        with socket.create_connection(address(api), timeout=10) as connection:
            connection.sendall(
                b"GET /livez HTTP/1.1\r\nHost: x\r\n" + extra_headers + b"Connection: close\r\n\r\n"
            )
            return status_of(connection)

    assert answer(b"X-Ordinary: " + b"a" * 8000 + b"\r\n") == 200
    assert answer(b"X-Huge: " + b"a" * 256 * 1024 + b"\r\n") == 431
    assert answer(b"".join(b"X-Many-%d: a\r\n" % n for n in range(101))) == 431

    # A head that never ends is cut off, as is a connection left idle between requests.
    unfinished = socket.create_connection(address(api), timeout=HEAD_SECONDS + 10)
    idle = socket.create_connection(address(api), timeout=HEAD_SECONDS + 10)
    began = time.monotonic()
    unfinished.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
    idle.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(idle) == 200
    for connection in (unfinished, idle):
        with connection:
            while connection.recv(4096):
                pass
    assert time.monotonic() - began < HEAD_SECONDS + 5


def test_a_process_that_dies_is_replaced(
    own_api: tuple[Service, str], stack_env: dict[str, str]
) -> None:
    api, base = own_api
    main = psutil.Process(api.proc.pid)
    before = {child.pid for child in main.children()}
    assert len(before) == int(stack_env.get("API_WORKERS", "2"))

    os.kill(min(before), signal.SIGKILL)

    deadline = time.monotonic() + 30
    while True:
        now = {child.pid for child in main.children() if child.status() != psutil.STATUS_ZOMBIE}
        if len(now) == len(before) and min(before) not in now:
            break
        assert time.monotonic() < deadline, f"the dead process was not replaced: {now}"
        time.sleep(0.2)
    for _ in range(10):  # every process answers, the new one among them
        assert requests.get(f"{base}/livez", timeout=5).status_code == 200
    assert api.proc.poll() is None


def test_the_servers_own_lines_are_logged_as_ours(
    stack_env: dict[str, str], logs_dir: Path
) -> None:
    api, base = start_api({**stack_env, "LOG_FORMAT": "json"}, logs_dir / "server-json.log")
    try:
        assert requests.get(f"{base}/livez", timeout=5).status_code == 200
    finally:
        api.stop()
    lines = [orjson.loads(line) for line in api.output().splitlines() if line.strip()]

    server = [line["event"] for line in lines if line["logger"].startswith("_granian")]
    assert any(event.startswith("Listening at") for event in server)
    assert any(event.startswith("Started worker") for event in server)
    # The processes' threads are meant to outnumber the cores: no warning about it.
    assert not [line for line in lines if line["level"] == "warning"]
