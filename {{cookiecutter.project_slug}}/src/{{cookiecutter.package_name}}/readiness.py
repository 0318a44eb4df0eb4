"""Readiness with hysteresis: it changes only once READINESS_STREAK probes in a row disagree.

One probe that lands on a connection an outage broke does not take an instance out of the load
balancer after the dependency has recovered, and one lucky probe during an outage does not put
it back.
"""

READINESS_STREAK = 2


class Readiness:
    """Whether dependencies count as up, changed only by a streak of probes saying otherwise."""

    def __init__(self) -> None:
        self.ready = True
        self._disagreeing = 0

    def observe(self, ok: bool) -> bool:
        """Record one probe's outcome; return the readiness to report."""
        if ok == self.ready:
            self._disagreeing = 0
        else:
            self._disagreeing += 1
            if self._disagreeing >= READINESS_STREAK:
                self.ready, self._disagreeing = ok, 0
        return self.ready
