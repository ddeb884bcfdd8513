"""JSON Schema files for every topic, generated from the pydantic models.

``streamcrm schemas`` writes them into ``schemas/``; a test fails when the checked-in files
and the models disagree, so the published contract cannot drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from streamcrm.core.events import (
    CancellationEvent,
    FeedbackEvent,
    MarketingEvent,
    PrivacyEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)
from streamcrm.core.records import (
    Alert,
    CampaignMetrics,
    CustomerScore,
    DeadLetter,
    ModelMetrics,
    UpliftMetrics,
)

_TOPIC_MODELS: dict[str, Any] = {
    "purchases": Annotated[PurchaseEvent | RefundEvent, Field(discriminator="type")],
    "feedback": FeedbackEvent,
    "support": Annotated[SupportEvent | CancellationEvent, Field(discriminator="type")],
    "privacy": PrivacyEvent,
    "marketing": MarketingEvent,
    "scores": CustomerScore,
    "alerts": Alert,
    "deadletter": DeadLetter,
    "model-metrics": ModelMetrics,
    "campaign-metrics": CampaignMetrics,
    "uplift": UpliftMetrics,
}


DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The JSON Schema draft every file declares (``$schema``) and is checked against in the tests."""


def topic_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each topic's record, by topic kind (``purchases``, ``scores``, ...)."""
    schemas = {}
    for kind, model in _TOPIC_MODELS.items():
        schema = TypeAdapter(model).json_schema()
        schema["$schema"] = DIALECT
        schema["$id"] = f"https://streamcrm.dev/schemas/crm.{kind}.schema.json"
        schema["title"] = f"crm.{kind}"
        schemas[kind] = schema
    return schemas


def render(schema: dict[str, Any]) -> str:
    """The canonical text of a schema file."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_path(directory: Path, kind: str) -> Path:
    return directory / f"crm.{kind}.schema.json"


def write_schemas(directory: Path) -> list[Path]:
    """Write every topic's schema file into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, schema in topic_schemas().items():
        path = schema_path(directory, kind)
        path.write_text(render(schema))
        paths.append(path)
    return paths


def stale_schemas(directory: Path) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    return [
        schema_path(directory, kind).name
        for kind, schema in topic_schemas().items()
        if not schema_path(directory, kind).exists()
        or schema_path(directory, kind).read_text() != render(schema)
    ]
