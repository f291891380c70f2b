"""HTTP only: translate requests to service calls and results to JSON."""
