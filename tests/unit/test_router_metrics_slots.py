"""router.metrics: the slot → instance address map HAProxy's per-server figures are joined on."""

from __future__ import annotations

from router.metrics import RouterMetrics
from router.plan import Backend
from router.routes import Server


def test_each_filled_slot_says_which_address_it_routes_to() -> None:
    layout = {"go": Backend(app="go", hostnames=("go.localhost",),
                            slots=(Server("127.0.0.2", 32768), None, Server("127.0.0.3", 32769)))}
    metrics = RouterMetrics()
    metrics.watch_slots(lambda: layout)
    text = metrics.render().decode()
    assert 'paas_router_server_info{address="127.0.0.2:32768",app="go",server="s1"} 1.0' in text
    assert 'paas_router_server_info{address="127.0.0.3:32769",app="go",server="s3"} 1.0' in text
    assert 'server="s2"' not in text  # an empty slot counts for no instance
