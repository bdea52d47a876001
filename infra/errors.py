"""One error hierarchy. Messages say what went wrong and which setting or command fixes it."""


class DonorcastError(Exception):
    """Base of every error we raise on purpose; the CLI prints these without a traceback."""


class ServiceError(DonorcastError):
    """An embedded or external service could not be started or reached."""


class KafkaUnavailable(ServiceError):
    pass


class DatabaseUnavailable(ServiceError):
    pass


class InputError(DonorcastError):
    """A file, record or argument we cannot use."""


class ModelNotFound(DonorcastError):
    """No model in the registry matches the request."""


class RetriesExceeded(DonorcastError):
    """A network operation failed after capped back-off."""
