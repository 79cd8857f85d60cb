"""Request ids and log lines of the API: correlated, and free of secrets and client IPs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics

from clicktrail.sources import Source
from clicktrail.web import observe
from tests.support.twins import MemorySources, RecordingEnqueuer
from tests.support.web import basic, twin_app, twin_services

KEY = "wk-very-secret-key"


@pytest.fixture
def app_and_log() -> Iterator[tuple[object, io.StringIO]]:
    services = twin_services(MemorySources({KEY: Source("src-9", "web", {})}))
    app = twin_app(services, LOG_FORMAT="json", LOG_REQUESTS="1")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(handler)
    yield app, buffer
    logging.getLogger().removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def test_a_request_id_is_honoured_echoed_and_on_the_log_line(
    app_and_log: tuple[object, io.StringIO],
) -> None:
    app, buffer = app_and_log
    client = app.test_client()  # type: ignore[attr-defined]

    response = client.post(
        "/v1/track",
        json={"userId": "u", "messageId": "m-1", "event": "E"},
        headers={**basic(KEY), "X-Request-ID": "abc-123"},
        environ_base={"REMOTE_ADDR": "192.0.2.55"},
    )

    assert response.headers["X-Request-ID"] == "abc-123"
    [accepted] = [line for line in lines(buffer) if line["event"] == "accepted 1 event(s)"]
    assert accepted["request_id"] == "abc-123"
    assert accepted["source_id"] == "src-9"
    assert accepted["message_ids"] == ["m-1"]
    assert len(str(accepted["trace_id"])) == 32
    assert accepted["level"] == "info"
    assert accepted["logger"] == "clicktrail.web.ingest"
    assert "timestamp" in accepted
    assert KEY not in buffer.getvalue()
    assert "192.0.2.55" not in buffer.getvalue()


def test_a_bad_request_id_is_replaced(app_and_log: tuple[object, io.StringIO]) -> None:
    app, _ = app_and_log

    response = app.test_client().get("/livez", headers={"X-Request-ID": "x" * 500})  # type: ignore[attr-defined]

    assert len(response.headers["X-Request-ID"]) == 32


def test_big_batches_log_a_count_not_every_message_id(
    app_and_log: tuple[object, io.StringIO],
) -> None:
    app, buffer = app_and_log
    batch = [
        {"type": "track", "userId": "u", "messageId": f"m-{i}", "event": "E"} for i in range(50)
    ]

    app.test_client().post("/v1/batch", json={"batch": batch}, headers=basic(KEY))  # type: ignore[attr-defined]

    [accepted] = [line for line in lines(buffer) if line["event"] == "accepted 50 event(s)"]
    assert accepted["message_count"] == 50
    assert len(accepted["message_ids"]) == 10  # type: ignore[arg-type]


def test_failures_log_neither_keys_nor_addresses(app_and_log: tuple[object, io.StringIO]) -> None:
    app, buffer = app_and_log
    down = twin_services(
        MemorySources({KEY: Source("src-9", "web", {})}), RecordingEnqueuer(down=True)
    )
    app.extensions["clicktrail"] = down  # type: ignore[attr-defined]

    response = app.test_client().post(  # type: ignore[attr-defined]
        "/v1/track",
        json={"userId": "u", "event": "E", "writeKey": KEY},
        environ_base={"REMOTE_ADDR": "192.0.2.66"},
    )

    assert response.status_code == 503
    assert any("unavailable" in str(line["event"]) for line in lines(buffer))
    assert KEY not in buffer.getvalue()
    assert "192.0.2.66" not in buffer.getvalue()


class ExplodingSources(MemorySources):
    def by_write_key(self, key: str) -> Source | None:
        raise RuntimeError("boom")


def test_a_crash_logged_for_people_shows_no_local_variables() -> None:
    app = twin_app(twin_services(ExplodingSources({})), LOG_FORMAT="console")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(handler)
    try:
        response = app.test_client().post(
            "/v1/track", json={"userId": "u", "event": "E"}, headers=basic(KEY)
        )
    finally:
        logging.getLogger().removeHandler(handler)

    assert response.status_code == 500
    assert "RuntimeError: boom" in buffer.getvalue()
    assert KEY not in buffer.getvalue()


def series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_made_up_methods_and_paths_make_up_no_metric_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An exporter of this app's own: the process's is bound to the first app built.
    exporter = PrometheusMetrics.for_app_factory(
        registry=CollectorRegistry(), path="/metrics", group_by="endpoint"
    )
    monkeypatch.setattr(observe, "_exporter", exporter)
    client = twin_app(twin_services(MemorySources({KEY: Source("src-9", "web", {})}))).test_client()
    client.open("/v1/track", method="ZZ0")  # the first OTHER request makes its series
    client.open("/nowhere-0", method="QQ0")
    client.get("/nowhere-0")
    before = series(client.get("/metrics").get_data(as_text=True))

    answers = {client.open("/v1/track", method=f"ZZ{n}").status_code for n in range(1, 30)}
    answers |= {client.open(f"/nowhere-{n}", method=f"QQ{n}").status_code for n in range(1, 30)}
    answers |= {client.get(f"/nowhere-{n}").status_code for n in range(1, 30)}
    after = series(client.get("/metrics").get_data(as_text=True))

    assert answers == {404, 405}
    assert any('method="OTHER"' in s and 'status="405"' in s for s in before)
    assert after == before
    assert not [s for s in after if "ZZ" in s or "QQ" in s or "nowhere" in s]
