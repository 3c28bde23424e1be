"""The errors the workspace domain raises. Each has a stable `code` and names the `field`.

The HTTP API maps codes to responses; messages are for people and may change.
"""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused because it would break a rule; nothing was appended.

    `code` names the rule (stable, machine-readable), `field` the offending input.
    """

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, field={self.field!r}, message={self.message!r})"


class NotFoundError(DomainError):
    """The stream the command names does not exist, or is of another kind."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__("not_found", message, field=field)


class ConflictError(DomainError):
    """The stream is not at the version the command expected (or kept moving under retries).

    `current_version` is the stream's version when the conflict was seen.
    """

    def __init__(self, stream_id: str, expected_version: int | None, current_version: int) -> None:
        expected = "any version" if expected_version is None else f"version {expected_version}"
        super().__init__(
            "version_conflict",
            f"stream {stream_id} is at version {current_version}; the command expected {expected}",
            field="expected_version",
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.current_version = current_version
