"""Fault-test probes, loaded into a worker subprocess (``PYTHONPATH``) by the crash test.

Python imports ``sitecustomize`` at start-up. With ``STREAMCRM_PROBE_EVENT_ID_WINDOW`` set,
customer states remember only that many recent event ids, so a redelivered event is seldom
still among them: the crash test then proves the offset-mark guard, not the id window. With
``STREAMCRM_PROBE_NO_OFFSET_GUARD`` set, the store's write script no longer refuses a message
at or below its partition's mark: the control run, which must double-count.

Never used outside the tests: nothing in the product reads these variables.
"""

from __future__ import annotations

import os

_WINDOW = os.environ.get("STREAMCRM_PROBE_EVENT_ID_WINDOW")
_NO_GUARD = os.environ.get("STREAMCRM_PROBE_NO_OFFSET_GUARD")

if _WINDOW or _NO_GUARD:
    import streamcrm.core.state
    import streamcrm.store.redis

    if _WINDOW:
        streamcrm.core.state.RECENT_EVENT_IDS = int(_WINDOW)
    if _NO_GUARD:
        guard = "if mark and tonumber(mark) >= tonumber(ARGV[a + 2]) then"
        if guard not in streamcrm.store.redis.WRITE_SCRIPT:
            # SystemExit, not an assertion: site.py reports an exception here and goes on,
            # and the control would then run with the guard and prove nothing.
            raise SystemExit("the no-offset-guard probe no longer matches the write script")
        streamcrm.store.redis.WRITE_SCRIPT = streamcrm.store.redis.WRITE_SCRIPT.replace(
            guard, "if false then"
        )
