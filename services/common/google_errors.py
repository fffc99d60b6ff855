"""What a later attempt of a Google Cloud client call may not hit, shared by the GCS lake and the BigQuery
warehouse (each adds what only its own API raises). Imports the Google clients: import it only where they
are used."""

from __future__ import annotations

import concurrent.futures

import requests
from google.api_core import exceptions as api
from google.auth import exceptions as auth

__all__ = ["TRANSIENT_API", "TRANSIENT_NETWORK"]

TRANSIENT_API: tuple[type[BaseException], ...] = (
    api.TooManyRequests,
    api.InternalServerError,
    api.BadGateway,
    api.ServiceUnavailable,
    api.GatewayTimeout,
    api.RetryError,  # the client's own retries ran out of time
)
"""429 and 5xx answers: rate limits reset, servers recover."""

TRANSIENT_NETWORK: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
    concurrent.futures.TimeoutError,
    auth.TransportError,
)
"""The request did not get an answer: the connection, a timeout, the token endpoint."""
