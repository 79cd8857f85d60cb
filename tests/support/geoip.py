"""A small MaxMind City database written for tests (GeoIP is never downloaded)."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

PARIS = {
    "country": {"iso_code": "FR", "names": {"en": "France"}},
    "subdivisions": [{"iso_code": "IDF", "names": {"en": "Île-de-France"}}],
    "city": {"names": {"en": "Paris"}},
    "location": {"latitude": 48.8566, "longitude": 2.3522, "time_zone": "Europe/Paris"},
}
COUNTRY_ONLY = {"country": {"iso_code": "JP", "names": {"en": "Japan"}}}


def write_city_database(path: Path) -> Path:
    """203.0.113.0/24 is in Paris, 2001:db8::/32 in Japan (country only); nothing else is known."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    writer.insert_network(IPSet(["203.0.113.0/24"]), PARIS)
    writer.insert_network(IPSet(["2001:db8::/32"]), COUNTRY_ONLY)
    writer.to_db_file(str(path))
    return path
