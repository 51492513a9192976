"""Every setting's default, and Heap's base URLs, in one place.

The environment's model (``edge.config.Settings``), the Heap client (``heap.client.
DeliverySettings``) and the local tools read their defaults here, and a test holds
``template.yaml`` to the same values, so that code run outside Lambda (tests, the CLI, a library
user) behaves as the deployed functions do. A function of the template may still set its own
value where it has a reason to (the consumer's and the API's retry budgets).
"""

from __future__ import annotations

from typing import Final

# Heap's server-side API, by data centre (the template's HeapRegion parameter picks one).
HEAP_BASE_URLS: Final = {"us": "https://heapanalytics.com", "eu": "https://c.eu.heap-api.com"}
HEAP_API_URL: Final = HEAP_BASE_URLS["us"]

# Heap requests: an attempt's connect and read timeouts (together its hard limit).
HEAP_CONNECT_TIMEOUT_SECONDS: Final = 3.0
HEAP_READ_TIMEOUT_SECONDS: Final = 10.0
HEAP_BULK_CAP: Final = 1000  # Heap's most items in one bulk request
RETRY_BUDGET_SECONDS: Final = 10.0  # in-process retry waits per delivery

# Pacing: this process's share of Heap's 15,000 events/min per app, and its burst (one bulk request).
RATE_LIMIT_EVENTS_PER_MINUTE: Final = 6000.0
RATE_LIMIT_BURST: Final = 1000

# SQS redelivery: visibility backoff base * 2^(receives - 1), capped; the consumer's own parking
# receive, one before the main queue's maxReceiveCount (20).
BACKOFF_BASE_SECONDS: Final = 30.0
BACKOFF_CAP_SECONDS: Final = 1800.0
MAX_RECEIVE_COUNT: Final = 19

# Seconds kept back from Lambda's remaining time for dead letters and the response.
DEADLINE_MARGIN_SECONDS: Final = 3.0
# Seconds an SSM value is cached (Powertools' parameters).
PARAMETERS_MAX_AGE_SECONDS: Final = 300
