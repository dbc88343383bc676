"""benchmarks.connection_hogs' hog against real HAProxy (the wrapper's config): it holds what the service lets it
hold, from its own addresses, and counts what the service ends."""

import asyncio
import threading
import time
from http.server import ThreadingHTTPServer

from benchmarks.connection_hogs import Attack, Hog
from tests.unit.test_haproxy_limits import Ingress, running_haproxy


def test_the_hog_holds_what_the_per_client_limit_allows_and_counts_the_rest(tmp_path):
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    limits = {"SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT": "3"}

    async def hog_for(port: int, seconds: float, addresses: int = 1) -> Hog:
        attack = Attack(5, b"", addresses)
        hog = Hog(port, attack, reopen_after=0.2)
        slots = [asyncio.create_task(hog.hold(attack.address(index))) for index in range(5)]
        await asyncio.sleep(seconds)
        held = hog.open
        for slot in slots:
            slot.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        hog.open = held
        return hog

    try:
        with running_haproxy(tmp_path, limits, backend_port=ingress.server_address[1]) as port:
            time.sleep(0.5)
            hog = asyncio.run(hog_for(port, 1.5))
            time.sleep(0.5)
            spread = asyncio.run(hog_for(port, 1.5, addresses=2))  # 3 from one address, 2 from the next
    finally:
        ingress.shutdown()
    assert hog.open == 3
    assert sum(hog.outcomes.values()) >= 4  # the other two, refused again every 0.2 s
    assert set(hog.outcomes) <= {"connect failed", "reset", "closed without answer"}
    assert spread.open == 5 and not spread.outcomes
