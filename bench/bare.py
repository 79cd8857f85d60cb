"""The baseline of ``ack_single``: the least an endpoint can do on the same server stack (the
API's server and its settings, clicktrail.web.server): read the body, parse the JSON, answer 200."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask, request

app = Flask(__name__)


@app.post("/v1/track")
@app.post("/v1/batch")
def accept() -> dict[str, Any]:
    orjson.loads(request.get_data())
    return {"success": True}


def create() -> Flask:
    """The app, as the API's server loads one (clicktrail.web.server)."""
    return app
