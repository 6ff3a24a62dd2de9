"""User-facing errors: the CLI prints these without a traceback."""


class TifaError(Exception):
    """A problem the user can fix; the message says where and what to do."""


class ConfigError(TifaError, ValueError):
    """A recipe, profile or override is invalid."""


class DataError(TifaError, ValueError):
    """A data file is missing or malformed; the message names file:line."""
