"""The one exception type that means "the user gave us something we cannot use"."""


class DermsynthError(ValueError):
    """An input problem the user can fix; the CLI prints its message and exits with code 2."""
