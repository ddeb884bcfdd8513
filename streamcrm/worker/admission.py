"""The edge of the pipeline: raw input messages turned into the events the core sees.

Decoding against the published schemas (:func:`streamcrm.core.events.decode_event`), events
dated too far ahead of the clock refused, the message key checked against the customer, and
the customer id pseudonymised, once, before anything is stored or learned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from streamcrm.core.events import (
    BaseEvent,
    Event,
    MarketingEvent,
    PrivacyEvent,
    check_message_key,
    decode_event,
    decode_marketing_event,
    decode_privacy_event,
)
from streamcrm.errors import InvalidEventError

_E = TypeVar("_E", bound=BaseEvent)


class Admission:
    """Decodes and admits input messages (see the module docstring)."""

    def __init__(
        self,
        max_event_time_skew: timedelta | None,
        clock: Callable[[], datetime],
        pseudonymise: Callable[[str], str] | None,
        require_keys: bool,
    ) -> None:
        self.max_event_time_skew = max_event_time_skew
        self.clock = clock
        self.pseudonymise = pseudonymise
        self.require_keys = require_keys

    def not_after(self) -> datetime | None:
        """The latest event time accepted now, ``clock() + max_event_time_skew`` (None: any)."""
        if self.max_event_time_skew is None:
            return None
        return self.clock() + self.max_event_time_skew

    def event(
        self, raw: bytes, topic: str | None, not_after: datetime | None, key: bytes | None
    ) -> Event | InvalidEventError:
        """The admitted event of an input message, or why it is invalid (to dead-letter)."""
        try:
            return self.admitted(decode_event(raw, topic, not_after), key)
        except InvalidEventError as error:
            return error

    def privacy_event(self, raw: bytes, key: bytes | None) -> PrivacyEvent:
        """The admitted privacy request of a message; raises ``InvalidEventError``."""
        return self.admitted(decode_privacy_event(raw), key)

    def marketing_event(self, raw: bytes, key: bytes | None) -> MarketingEvent:
        """The admitted marketing event of a message (refused, as any event, when dated too
        far ahead of the clock); raises ``InvalidEventError``."""
        return self.admitted(decode_marketing_event(raw, self.not_after()), key)

    def admitted(self, event: _E, key: bytes | None) -> _E:
        """A decoded event as the core sees it: its message key checked (``require_keys``;
        a producer may key by the id or by its pseudonym) and its id pseudonymised, the
        pseudonym computed once for both. Raises ``MessageKeyError``."""
        pseudonym = None if self.pseudonymise is None else self.pseudonymise(event.customer_id)
        if self.require_keys:
            check_message_key(event, key, *(() if pseudonym is None else (pseudonym,)))
        if pseudonym is None:
            return event
        return event.model_copy(update={"customer_id": pseudonym})
