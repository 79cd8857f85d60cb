"""The benchmark behind `make bench`: prints one JSON document of figures."""
