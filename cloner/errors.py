"""Domain exceptions. Every error cloner raises on purpose derives from ``ClonerError``.

Each class's docstring is its default message. ``exit_code`` is what the CLI
returns (2 = bad input or usage, 1 = the operation failed); ``http_status`` is
what the HTTP API answers. ``transient`` errors are retried with backoff by
the worker; the rest fail the request at once.
"""

from __future__ import annotations


class ClonerError(Exception):
    """cloner failed."""

    exit_code: int = 1
    http_status: int = 500
    transient: bool = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The one-line, user-facing message."""
        return str(self).splitlines()[0] if str(self) else type(self).__name__


class InvalidInput(ClonerError):
    """Invalid input."""

    exit_code = 2
    http_status = 422


class TenantExists(InvalidInput):
    """The tenant already exists."""

    http_status = 409


class TenantNotFound(InvalidInput):
    """No such tenant."""

    http_status = 404


class TemplateNotFound(InvalidInput):
    """No such template."""


class InvalidBackup(InvalidInput):
    """The backup cannot be restored (outside the tenant's backup folder, or unverified)."""


class TemplateError(ClonerError):
    """A template is broken (checksum mismatch, syntax error, failed to apply)."""

    exit_code = 1


class InvalidTransition(ClonerError):
    """The tenant is not in a state that allows this."""

    exit_code = 2
    http_status = 409


class ControlPlaneError(ClonerError):
    """The control plane cannot be read or written."""


class LeaseLost(ClonerError):
    """This attempt no longer holds its request's lease; its writes are refused.

    Raised by every fenced control-plane write (renew aside, which answers
    False): another attempt claimed the request after this one's lease
    expired, or the request already reached its outcome. Never a ``StepFailed``
    cause: the attempt stops and records nothing.
    """


class RuntimeUnavailable(ClonerError):
    """The container runtime (Docker) cannot be reached."""

    transient = True


class RuntimeFault(ClonerError):
    """The container runtime refused an operation."""

    transient = True


class ImageError(ClonerError):
    """An engine image is missing and could not be pulled or built."""


class NotReady(ClonerError):
    """The tenant database did not become ready in time."""

    transient = True


class EndpointNotVouched(NotReady):
    """The endpoint is no longer the tenant's own container; no secret was sent to it."""


class EngineError(ClonerError):
    """The tenant database refused an operation."""


class IsolationViolation(ClonerError):
    """The isolation proof failed."""


class BackupError(ClonerError):
    """A backup could not be taken or verified."""


class TimeoutExceeded(ClonerError):
    """The operation did not finish in time."""


class UserConflict(InvalidInput):
    """The user already belongs to another tenant."""

    http_status = 409


class UserNotFound(InvalidInput):
    """No such user."""

    http_status = 404


class AccessDenied(ClonerError):
    """Access denied: the token or its user does not grant this tenant.

    Messages never carry the token, a key or a secret: only which check refused.
    """

    exit_code = 2
    http_status = 403
