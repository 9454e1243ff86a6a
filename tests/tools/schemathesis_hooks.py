"""Schemathesis hooks for .ci/schemathesis (loaded through SCHEMATHESIS_HOOKS): generators for values whose
validity no JSON Schema keyword states, so that the positive examples are values the services must accept.

- `format: e164` (the gateway's phone numbers): E.164, valid for the country code by libphonenumber's
  metadata, of a number type gateway.sms allows (the defaults refuse premium rate, toll free and the like).
  Generated from ranges that are: the United States' 201-555 range (fixed line or mobile, the metadata's own
  example) and the United Kingdom's 7400 mobile range (likewise).
- `format: date-time`: the only request field of that format is the plugin's `changed_at`, which must not be
  before 1970 nor more than 5 minutes ahead of the server's clock; generated between 1971 and 2025, with
  any UTC offset.

Negative examples still come from schemathesis (wrong types, broken patterns, missing fields).
"""

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

import schemathesis

_RANGES = [
    ("+1201555", 4),
    ("+447400", 6),
]


@st.composite
def _e164(draw):
    prefix, digits = draw(st.sampled_from(_RANGES))
    suffix = draw(st.text(alphabet="0123456789", min_size=digits, max_size=digits))
    return prefix + suffix


@st.composite
def _past_date_time(draw):
    moment = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2025, 12, 31)))
    minutes = draw(st.integers(min_value=-14 * 60, max_value=14 * 60))
    offset = timezone(timedelta(minutes=minutes))
    return moment.replace(tzinfo=timezone.utc).astimezone(offset).isoformat()


schemathesis.openapi.format("e164", _e164())
schemathesis.openapi.format("date-time", _past_date_time())
