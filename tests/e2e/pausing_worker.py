"""A Dramatiq worker entry module for tests: the real worker, except that it stops dead at one
chosen point inside an actor (CONVEYOR_TEST_PAUSE_AT), after writing CONVEYOR_TEST_MARKER,
so a test can SIGKILL it exactly there.

- `capture`: Stripe has captured the payment, the database does not know yet.
- `allocation`: the allocation is written inside its transaction, not yet committed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from conveyor.stripe_gateway import StripeGateway
from fulfilment import allocation

PAUSE_AT = os.environ.get("CONVEYOR_TEST_PAUSE_AT", "")
MARKER = Path(os.environ.get("CONVEYOR_TEST_MARKER", "/nonexistent"))


def _stop_here() -> None:
    MARKER.write_text(str(os.getpid()))
    time.sleep(3600)


if PAUSE_AT == "capture":
    _capture = StripeGateway.capture_intent

    def capture_then_stop(self: StripeGateway, *args: Any, **kwargs: Any) -> Any:
        result = _capture(self, *args, **kwargs)
        _stop_here()
        return result

    StripeGateway.capture_intent = capture_then_stop  # type: ignore[method-assign]

if PAUSE_AT == "allocation":
    _allocate = allocation.allocate_order_stock

    def allocate_then_stop(**kwargs: Any) -> Any:
        picks = _allocate(**kwargs)
        kwargs["uow"].flush()
        _stop_here()
        return picks

    allocation.allocate_order_stock = allocate_then_stop  # type: ignore[assignment]

from fulfilment.worker import broker  # noqa: E402,F401  (the real broker and actors)
