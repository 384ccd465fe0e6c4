"""Entry module for `dramatiq fulfilment.worker` (what `conveyor worker` runs).

Dramatiq imports this in every worker process: it builds the broker from the environment's
settings, installs the process runtime once the process has booted, then declares the actors.
"""

from __future__ import annotations

import logging

from conveyor.broker import RuntimeMiddleware, create_broker
from conveyor.settings import Settings

logging.getLogger("stripe").setLevel(logging.WARNING)  # not a log line per API call
settings = Settings()
broker = create_broker(settings)
broker.add_middleware(RuntimeMiddleware(settings))

from fulfilment import actors  # noqa: E402,F401  (actors bind to the broker made above)
