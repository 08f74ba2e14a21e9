"""obsctl package."""

import os

# caproto's server holds a monitor update back while more arrive within this many seconds (default 0.01), to
# batch them; a sample block right after a drive packet would wait that long.  Bursts of updates written in
# the same instant (a control cycle's readbacks) are still batched, and a flooded circuit still batches more.
os.environ.setdefault("CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC", "0.002")
