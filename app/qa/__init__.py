"""Retrieval and answering; no HTTP in here."""
