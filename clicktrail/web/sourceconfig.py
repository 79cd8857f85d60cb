"""The control-plane answer RudderStack's SDKs wait for before they send.

RudderStack's browser, iOS and Android SDKs first fetch ``<controlPlaneUrl>/sourceConfig``
(the write key as the HTTP Basic username) and only then send events to their data plane. With
both URLs pointing at Clicktrail they get here the source behind the key, enabled, with no
device-mode destinations: events go to Clicktrail alone.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from clicktrail.clock import format_ts
from clicktrail.web.auth import authenticate, basic_write_key
from clicktrail.web.cors import check_origin
from clicktrail.web.services import Services

bp = Blueprint("sourceconfig", __name__)
WORKSPACE_ID = "clicktrail"


@bp.get("/sourceConfig")
@bp.get("/sourceConfig/", endpoint="source_config_slash")
def source_config() -> dict[str, Any]:
    services: Services = current_app.extensions["clicktrail"]
    key = basic_write_key()
    source = authenticate(services, key)
    check_origin(source)
    return {
        "isHosted": False,
        "source": {
            "id": source.id,
            "name": source.name,
            "writeKey": key,
            "enabled": True,
            "workspaceId": WORKSPACE_ID,
            "config": {},
            "destinations": [],
            "updatedAt": format_ts(services.clock.now()),
        },
    }
