from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from clicktrail.telemetry import (
    FILTERED,
    context_of,
    scrub,
    scrub_text,
    start_span,
    traceparent_of,
)


def test_scrub_filters_sensitive_keys_at_any_depth() -> None:
    report = {
        "request": {
            "headers": {
                "Authorization": "Basic abc",
                "X-Forwarded-For": "203.0.113.1",
                "Accept": "*/*",
            }
        },
        "extra": {
            "celery-job": {"args": [{"events": [{"writeKey": "k", "context": {"ip": "1.2.3.4"}}]}]}
        },
        "user": {"ip_address": "1.2.3.4"},
    }

    cleaned = scrub(report)

    assert cleaned["request"]["headers"] == {
        "Authorization": FILTERED,
        "X-Forwarded-For": FILTERED,
        "Accept": "*/*",
    }
    event = cleaned["extra"]["celery-job"]["args"][0]["events"][0]
    assert event == {"writeKey": FILTERED, "context": {"ip": FILTERED}}
    assert cleaned["user"]["ip_address"] == FILTERED


def test_scrub_text_masks_addresses_and_url_credentials() -> None:
    text = "from 198.51.100.7 and 2001:db8:85a3::8a2e:370:7334 via redis://:hunter2@cache:6379/0"

    assert scrub_text(text) == f"from {FILTERED} and {FILTERED} via redis://{FILTERED}@cache:6379/0"


def test_a_malformed_traceparent_gives_an_empty_context() -> None:
    from opentelemetry import trace

    assert not trace.get_current_span(context_of("garbage")).get_span_context().is_valid
    valid = context_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert (
        trace.get_current_span(valid).get_span_context().trace_id
        == 0x0AF7651916CD43DD8448EB211C80319C
    )


def test_clock_times_are_not_taken_for_addresses() -> None:
    assert scrub_text("at 22:10:34 and ::1") == f"at 22:10:34 and {FILTERED}"


def test_without_a_tracer_provider_spans_are_not_recorded_but_the_trace_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in a process where nothing installed a provider (other tests here may have).
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    child = start_span("work", context_of(caller), SpanKind.CONSUMER)
    grandchild = start_span("more", trace.set_span_in_context(child))
    root, other_root = start_span("root"), start_span("root")

    assert not child.is_recording()
    assert traceparent_of(child) != caller
    assert traceparent_of(child).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"  # type: ignore[union-attr]
    assert traceparent_of(grandchild).split("-")[1:2] == traceparent_of(child).split("-")[1:2]  # type: ignore[union-attr]
    assert traceparent_of(grandchild) != traceparent_of(child)
    assert traceparent_of(root).endswith("-01")  # type: ignore[union-attr]
    assert traceparent_of(root).split("-")[1] != traceparent_of(other_root).split("-")[1]  # type: ignore[union-attr]
