"""Errors the QA layer raises for the HTTP layer to translate."""


class BackendUnavailable(Exception):
    """A remote backend (the h2oGPTe collection) cannot serve the request now; the message says why (503)."""
