"""Pydantic models the core builds from values it computed itself, without validating them.

Validation belongs at the edge, where bytes come in (``decode_event``, the state store). A
score, a score point or an alert memory the core makes per event is built from values the core
just computed, of the declared types, and validating them again costs more than everything
else the score needs besides the models (pydantic's own ``model_construct`` is slower still:
it is written in Python and looks up aliases). Two helpers build such models the cheap way and
give exactly what the plain way gives:

- :func:`unvalidated` is ``Model(**values)``: the same field values in the same order, the same
  fields set (so ``model_dump_json(exclude_unset=True)`` is the same), defaults filled in the
  same way. It does not convert: the caller passes each field its declared type (a ``float``
  field a ``float``, not an ``int``; a ``tuple`` field a ``tuple``) and a container no one
  else changes (validation would have copied it).
- :func:`with_changes` is ``model.model_copy(update=changes)``, which never validated either.

``tests/unit/test_trusted.py`` holds every construction of the scoring core to the validated
one on a simulated stream, field by field and type by type.

>>> from streamcrm.core.records import ChurnDriver
>>> fast = unvalidated(ChurnDriver, feature="recency_in_horizons", log_odds=0.5)
>>> fast == ChurnDriver(feature="recency_in_horizons", log_odds=0.5)
True
>>> with_changes(fast, log_odds=0.25).model_dump_json()
'{"feature":"recency_in_horizons","log_odds":0.25}'
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set_slot = object.__setattr__
"""Frozen models refuse ``setattr``; a model's own slots are set as pydantic sets them."""

_IMMUTABLE_DEFAULTS = (type(None), bool, int, float, str, tuple, frozenset)
"""Defaults that can be shared by every instance (pydantic copies the others)."""


@dataclass(frozen=True)
class _Blueprint:
    """What building a model class needs, worked out once per class."""

    template: dict[str, Any]
    """Every field in declaration order: its default, or a placeholder for the others."""
    required: frozenset[str]
    factories: tuple[tuple[str, Callable[[], Any]], ...]
    """Fields whose default is made afresh for each instance."""


@functools.cache
def _blueprint(model: type[BaseModel]) -> _Blueprint:
    if model.model_config.get("extra") == "allow" or model.__pydantic_post_init__:
        raise TypeError(f"{model.__name__}: extra fields or a post-init hook are not supported")
    template: dict[str, Any] = {}
    required: set[str] = set()
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, info in model.model_fields.items():
        if info.validation_alias is not None or info.alias is not None:
            raise TypeError(f"{model.__name__}.{name}: aliases are not supported")
        template[name] = None
        if info.default_factory is not None:
            if info.default_factory_takes_validated_data:
                raise TypeError(f"{model.__name__}.{name}: a factory of the data is not supported")
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
        elif info.is_required():
            required.add(name)
        elif isinstance(info.default, _IMMUTABLE_DEFAULTS):
            template[name] = info.default
        else:
            factories.append((name, functools.partial(copy.deepcopy, info.default)))
    return _Blueprint(template, frozenset(required), tuple(factories))


def unvalidated(model: type[M], /, **values: Any) -> M:
    """``model(**values)`` without validation, for values of the declared types (see the
    module docstring). Unknown or missing fields are still refused.

    >>> from datetime import UTC, datetime
    >>> from streamcrm.core.state import ScorePoint
    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> values = dict(as_of=at, churn_probability=0.25, health=80.0, clv_discounted=1.5,
    ...               segment_name="loyal")
    >>> unvalidated(ScorePoint, **values) == ScorePoint(**values)
    True
    >>> unvalidated(ScorePoint, as_of=at)
    Traceback (most recent call last):
    ...
    TypeError: ScorePoint: missing churn_probability, clv_discounted, health, segment_name
    """
    blueprint = _blueprint(model)
    fields = {**blueprint.template, **values}
    fields_set = set(values)
    if len(fields) != len(blueprint.template):
        unknown = ", ".join(sorted(fields_set - blueprint.template.keys()))
        raise TypeError(f"{model.__name__}: no field {unknown}")
    if not fields_set >= blueprint.required:
        missing = ", ".join(sorted(blueprint.required - fields_set))
        raise TypeError(f"{model.__name__}: missing {missing}")
    for name, factory in blueprint.factories:
        if name not in fields_set:
            fields[name] = factory()
    instance = model.__new__(model)
    _set_slot(instance, "__dict__", fields)
    _set_slot(instance, "__pydantic_fields_set__", fields_set)
    _set_slot(instance, "__pydantic_extra__", None)
    _set_slot(instance, "__pydantic_private__", None)
    return instance


def with_changes(model: M, /, **changes: Any) -> M:
    """``model.model_copy(update=changes)`` (unvalidated too), without pydantic's generic
    copying: the same fields, with ``changes`` set, and the fields set grown by them.

    >>> from datetime import UTC, datetime
    >>> from streamcrm.core.state import CustomerState
    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> state = CustomerState(customer_id="c1", first_seen_at=at, last_event_at=at)
    >>> later = with_changes(state, events_applied=1)
    >>> later == state.model_copy(update={"events_applied": 1}), sorted(later.model_fields_set)
    (True, ['customer_id', 'events_applied', 'first_seen_at', 'last_event_at'])
    """
    if model.__pydantic_extra__ is not None or model.__pydantic_private__ is not None:
        return model.model_copy(update=changes)
    copied = model.__new__(type(model))
    _set_slot(copied, "__dict__", {**model.__dict__, **changes})
    _set_slot(copied, "__pydantic_fields_set__", model.__pydantic_fields_set__ | changes.keys())
    _set_slot(copied, "__pydantic_extra__", None)
    _set_slot(copied, "__pydantic_private__", None)
    return copied
