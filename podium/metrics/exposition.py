"""The ``GET /v1/metrics`` answer of servers and agents.

Prometheus' text format comes from prometheus_client's own writer (``generate_latest``),
so what Prometheus parses is what the library vouches for.  ``?format=json`` answers the
same samples as JSON, for people and scripts without a Prometheus parser: one object per
metric family with its type, help and samples (label sets and values).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

FORMATS = ("prometheus", "json")


def _number(value: float) -> float | str | None:
    """A sample's value as JSON can hold it (NaN and the infinities as Prometheus writes
    them: JSON has no such numbers)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def registry_json(registry: CollectorRegistry) -> dict[str, Any]:
    """Every metric family of ``registry`` as JSON-ready data."""
    families = []
    for family in registry.collect():
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "unit": family.unit,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": _number(s.value)}
                    for s in family.samples
                ],
            }
        )
    return {"metrics": families}


def metrics_answer(registry: CollectorRegistry, format: str | None) -> Response:
    """``registry`` in ``format`` (None or ``prometheus``: the text format; ``json``);
    400, naming the choices, for anything else."""
    if format in (None, "", "prometheus"):
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    if format == "json":
        return JSONResponse(registry_json(registry))
    return JSONResponse(
        {"error": f"format must be one of {', '.join(FORMATS)}, not {format!r} (query parameter)"},
        status_code=400,
    )
