"""Errors the service raises for the HTTP layer to translate."""


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class NotReady(ServiceError):
    status_code = 503
