"""How often the FAQ replica's threads take turns with Python's GIL.

The replica scores on a thread of its own while its event loop answers calls (gRPC) and Ray's threads run
callbacks. Between its numba loops (which release the GIL) the scoring thread runs Python, and a thread waiting for
the GIL waits until the holder's switch interval runs out: 5 ms by default, longer than a request's whole scoring.
At 0.5 ms, side by side with the default (benchmarks/results/faq_gil_switch.md), a lone question's p50 was a median
0.69 ms lower over 12 paired rounds (lower in 10); c16 and c64 throughput within the rounds' spread (medians 1.04x,
1.07x).
"""

import os
import sys
from collections.abc import Mapping

GIL_SWITCH_INTERVAL_ENV = "SERVE_APP_FAQ_GIL_SWITCH_INTERVAL_S"
DEFAULT_GIL_SWITCH_INTERVAL_S = 0.0005
PYTHON_GIL_SWITCH_INTERVAL_S = 0.005  # Python's own default, for comparison (benchmarks' serve-fast-gil5ms)
# Python takes any positive float; beyond these, a value is surely a typo (milliseconds given as seconds, say).
MIN_GIL_SWITCH_INTERVAL_S, MAX_GIL_SWITCH_INTERVAL_S = 0.00001, 0.1


def gil_switch_interval_s(environ: Mapping[str, str] = os.environ) -> float:
    """The interval ``SERVE_APP_FAQ_GIL_SWITCH_INTERVAL_S`` asks for, else the default; ValueError naming the
    variable for anything but seconds within bounds (NaN and infinities included: they fail the range check)."""
    text = environ.get(GIL_SWITCH_INTERVAL_ENV)
    if text is None:
        return DEFAULT_GIL_SWITCH_INTERVAL_S
    refusal = (
        f"{GIL_SWITCH_INTERVAL_ENV}={text!r}: must be seconds from {MIN_GIL_SWITCH_INTERVAL_S:g} to "
        f"{MAX_GIL_SWITCH_INTERVAL_S:g} (default {DEFAULT_GIL_SWITCH_INTERVAL_S:g})"
    )
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(refusal) from None
    if not MIN_GIL_SWITCH_INTERVAL_S <= seconds <= MAX_GIL_SWITCH_INTERVAL_S:
        raise ValueError(refusal)
    return seconds


def set_gil_switch_interval() -> float:
    """Apply gil_switch_interval_s to this process (the replica's: the setting is process-wide); returns it."""
    seconds = gil_switch_interval_s()
    sys.setswitchinterval(seconds)
    return seconds
