"""How customer state and score JSON are kept in Redis: compressed against a dictionary.

State and score JSON are small documents (about 2.9 KB and 1 KB) that repeat the same keys
and the same shapes. A compressor gets little out of one small document alone; primed with a
dictionary of typical ones it stores a state in about 360 bytes and a score in about 210.

Stored forms, by their first byte:

- ``\x03`` (written now): zstd level 3 against a dictionary trained on simulated states and
  scores (``codec-v3.zdict``, made by ``tools/train_codec_dictionary.py``), in zstd's
  magic-less frame with the dictionary's id and the content size. About 30 % smaller than
  ``\x02`` and several times cheaper to write and read (figures in docs/performance.md).
- ``\x02``, ``\x01`` (still read): deflate against a preset dictionary (zlib's ``zdict``);
  the zlib header names the dictionary's Adler-32.
- ``{``: plain JSON, as the first versions stored it.

A stored value names its dictionary (zstd's dictionary id, zlib's Adler-32), so it is never
decompressed against the wrong one. The dictionaries are frozen: changing one would leave
every value stored with it unreadable. A better one goes in with its own version byte, beside
the others.

>>> unpack(pack('{"customer_id":"c1","order_count":3}'))
b'{"customer_id":"c1","order_count":3}'
>>> unpack(b'{"plain": "json"}')
b'{"plain": "json"}'
"""

from __future__ import annotations

import functools
import threading
import zlib
from importlib import resources

import zstandard

VERSION_1 = b"\x01"
VERSION_2 = b"\x02"
VERSION_3 = b"\x03"
LEVEL = 6
"""zlib level of version 2: 6 deflates a state by about a quarter more than 1."""
ZSTD_LEVEL = 3
"""zstd level of version 3: higher levels save a few per cent of space for several times the
CPU (docs/performance.md)."""
ZSTD_DICTIONARY_BYTES = 16_384
"""The size the version-3 dictionary was trained to: 32 and 64 KiB stored no less."""

_STATE_V1 = (
    '{"customer_id":"cust-00106","first_seen_at":"2026-01-09T08:46:33Z","last_event_at":"'
    '2026-02-05T02:30:22Z","newest_by_topic":{"purchases":"2026-02-05T02:30:22Z","feedbac'
    'k":"2026-01-29T17:33:37Z","support":"2026-01-30T22:50:20Z"},"events_applied":20,"lat'
    'e_events":0,"first_purchase_at":"2026-01-09T08:46:33Z","last_purchase_at":"2026-02-0'
    '5T02:30:22Z","order_count":6,"purchase_days":6,"recent_purchase_days":[739652],"gros'
    's_cents":63900,"total_items":19,"cost_cents":31692,"revenue_with_cost_cents":48939,"'
    'refund_count":1,"refunded_cents":17801,"acquisition":null,"csat_count":3,"csat_sum":'
    '13,"nps_sum":9,"nps_promoters":1,"nps_passives":0,"nps_detractors":0,"recent_ratings'
    '":[{"occurred_at":"2026-01-13T18:11:28Z","event_id":"cust-00106-000004","score":0.75'
    '}],"tickets":{"ticket-00106-0001":{"opened_at":"2026-01-22T16:15:53Z","opened_by":"c'
    'ust-00106-000012","priority":"high","category":"inquiry","first_response_at":"2026-0'
    '1-22T18:11:46Z","resolved_at":"2026-01-23T07:00:24Z"}},"forgotten_tickets":{"opened"'
    ':0,"resolved":0,"first_response_count":0,"first_response_seconds":0,"resolution_coun'
    't":0,"resolution_seconds":0,"sla_breaches":0,"by_category":{}},"escalations":0,"canc'
    'elled_at":null,"recent_event_ids":["cust-00106-000001"],"pending_snapshots":[{"score'
    'd_at":"2026-01-14T00:16:08Z","features":{"log_repeat_transactions":0.693147180559945'
    '3,"log_mean_spend":4.347758636554558,"recency_in_horizons":0.03177533436213992,"age_'
    'in_horizons":0.05161715534979424,"log_expected_at_own_rate":2.4503511624549654,"sile'
    'nce_times_rate":0.3683529207145874,"quiet_in_horizons":0.0,"refund_rate":0.0,"satisf'
    'action_mean":0.875,"satisfaction_recent":0.825,"log_rating_count":1.0986122886681096'
    ',"open_tickets":0.0,"complaints":0.0,"escalations":0.0,"mean_first_response_hours":0'
    '.0},"purchased":true}],"last_snapshot_at":"2026-02-05T02:30:22Z"}'
)

_SCORE_V1 = (
    '{"customer_id":"cust-00106","as_of":"2026-02-05T02:30:22Z","event_id":"cust-00106-00'
    '0011","churn_probability":0.5140648281083969,"cancelled":false,"segment_id":1,"segme'
    'nt_name":"champions","satisfaction_mean":0.85,"satisfaction_recent":0.83174999999999'
    '99,"csat_mean":4.333333333333333,"nps":100.0,"currency":"USD","customer_value":5531.'
    '88,"clv_simple":2688.135058683721,"clv_to_acquisition_cost":null,"clv_discounted":43'
    '03.959222288518,"loyalty":0.646426823172,"health":68.15969333910412,"recency_days":0'
    '.0,"frequency":6,"monetary":460.99,"rfm_recency":5,"rfm_frequency":5,"rfm_monetary":'
    '5,"population_satisfaction_mean":0.7699586776859506,"open_tickets":0,"tickets_by_cat'
    'egory":{"complaint":1,"inquiry":2},"escalations":0,"sla_breaches":0,"mean_first_resp'
    'onse_hours":8.645648148148148,"mean_resolution_hours":38.02435185185185,"churn_drive'
    'rs":[{"feature":"mean_first_response_hours","log_odds":0.07290440267743434},{"featur'
    'e":"age_in_horizons","log_odds":0.04502884711917978},{"feature":"complaints","log_od'
    'ds":0.04056162632368228}],"segment_distance":1.8382290839381619,"probability_alive":'
    '0.9999689599156144,"expected_purchases":8.632623881109078,"clv_expected":2770.679401'
    '4668085,"model_version":"churn-11.segments-1800.clv-5","schema_version":1}'
)

DICTIONARY_V1 = (_STATE_V1 + _SCORE_V1).encode()
"""A typical state (lists cut to one entry) and score of a simulated customer. Frozen."""

_ALERTS_AND_HISTORY_V2 = (
    '"alert_memory":{"raised":["churn_risk"],"last_fired":{"churn_risk":"2026-01-13T14:09:0'
    '9Z"},"segment_id":1,"segment_name":"at_risk","segment_candidate":null,"segment_candida'
    'te_scores":0,"sla_breaches":0,"cancelled":false},"score_history":[{"as_of":"2026-01-01'
    'T00:05:00Z","churn_probability":0.5,"health":50.5,"clv_discounted":837.63,"segment_nam'
    'e":"at_risk"},{"as_of":"2026-01-10T19:45:20Z","churn_probability":0.6768,"health":45.8'
    '6,"clv_discounted":636.03,"segment_name":"loyal"},{"as_of":"2026-01-13T14:09:09Z","chu'
    'rn_probability":0.8085,"health":48.39,"clv_discounted":322.95,"segment_name":"at_risk"'
    "}]"
)

DICTIONARY_V2 = (_STATE_V1[:-1] + "," + _ALERTS_AND_HISTORY_V2 + "}" + _SCORE_V1).encode()
"""Version 1's state with the alert memory and score history that states gained since (a
state then deflates to about 337 bytes instead of 409), and the same score. Frozen."""

_DICTIONARIES = {VERSION_1: DICTIONARY_V1, VERSION_2: DICTIONARY_V2}

DICTIONARY_V3_FILE = "codec-v3.zdict"
"""Version 3's zstd dictionary, beside this module (``tools/train_codec_dictionary.py``).
Frozen."""


@functools.cache
def dictionary_v3() -> zstandard.ZstdCompressionDict:
    """Version 3's dictionary, read on first use."""
    return zstandard.ZstdCompressionDict(
        resources.files(__package__).joinpath(DICTIONARY_V3_FILE).read_bytes()
    )


_per_thread = threading.local()


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """This thread's compressor and decompressor (zstd contexts are not thread-safe), each
    with the dictionary loaded once."""
    contexts: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(
        _per_thread, "contexts", None
    )
    if contexts is None:
        magicless = zstandard.FORMAT_ZSTD1_MAGICLESS
        parameters = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL,
            format=magicless,
            write_content_size=True,
            write_checksum=False,
            write_dict_id=True,
        )
        contexts = (
            zstandard.ZstdCompressor(dict_data=dictionary_v3(), compression_params=parameters),
            zstandard.ZstdDecompressor(dict_data=dictionary_v3(), format=magicless),
        )
        _per_thread.contexts = contexts
    return contexts


def pack(json_text: str) -> bytes:
    """The stored form of a state or score JSON document (the newest version)."""
    return VERSION_3 + _zstd()[0].compress(json_text.encode())


def pack_version_2(json_text: str) -> bytes:
    """The stored form of version 2 (what workers before version 3 wrote)."""
    deflate = zlib.compressobj(LEVEL, zdict=DICTIONARY_V2)
    return VERSION_2 + deflate.compress(json_text.encode()) + deflate.flush()


def unpack(stored: bytes | str) -> bytes:
    """The JSON of a stored value; raises ValueError for a form it does not know."""
    if isinstance(stored, str):  # a client that decodes responses: only plain JSON survives
        stored = stored.encode()
    if stored[:1] == VERSION_3:
        try:
            return _zstd()[1].decompress(stored[1:])
        except zstandard.ZstdError as error:
            raise ValueError(f"unreadable stored value: {error}") from error
    if stored[:1] == b"{":
        return stored
    dictionary = _DICTIONARIES.get(stored[:1])
    if dictionary is not None:
        inflate = zlib.decompressobj(zdict=dictionary)
        return inflate.decompress(stored[1:]) + inflate.flush()
    raise ValueError(f"unknown stored form (first byte {stored[:1]!r})")
