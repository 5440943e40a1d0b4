"""What the map accepts in one OTLP request, shared by the agent (which splits its
reports to fit) and the map (which refuses what does not fit)."""

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""One request, encoded (the Collector's own default receive limit)."""
MAX_REQUEST_BYTES = 3 * 1024 * 1024
"""What an agent puts in one request: below MAX_MESSAGE_BYTES with room for framing."""
MAX_RECORDS_PER_REQUEST = 5000
"""Records in one request; the map refuses the rest of a larger one, with the reason."""
MAX_CLOCK_SKEW_SECONDS = 120.0
"""How far in the future a record's interval may end (clocks of nodes drift)."""
MAX_INTERVAL_SECONDS = 3600.0
"""The longest interval a record may span (an agent's interval is at most 10 min)."""
