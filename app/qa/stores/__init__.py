"""The backends that hold documents: the local library (default) and an h2oGPTe collection."""
