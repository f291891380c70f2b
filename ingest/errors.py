"""Errors of the ingestion pipeline; every message is meant for the person who supplied the file."""


class IngestError(Exception):
    """A file could not be ingested; the message says why in plain words."""


class UnsupportedFileType(IngestError):
    """The file's type is not one of the supported formats."""


class FileTooLarge(IngestError):
    """The file (or an archive member) exceeds the configured size limit."""


class LibraryLocked(Exception):
    """Another writer holds the library lock for longer than we were willing to wait."""


class NotText(IngestError):
    """A file named as text (.txt, .md, .html) whose bytes are binary."""


class TooComplex(IngestError):
    """The document has more pages, slides, shapes, paragraphs, elements or text than a limit allows."""


class ParseLimitExceeded(IngestError):
    """Parsing the file ran past the parse worker's time or memory limit (the worker was stopped)."""


class TimeLimitExceeded(ParseLimitExceeded):
    """The time limit, in particular: on a loaded machine a second try may pass (page drawing does not keep it)."""


class StorageUnavailable(Exception):
    """The library's database cannot be reached now (store=postgres); the service answers 503 and retries."""
