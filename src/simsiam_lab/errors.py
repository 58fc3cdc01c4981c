"""The library's errors, each a one-line message naming the file, key or value and the fix:
what the CLI catches, without importing the layers that raise them (torch, scipy)."""


class ConfigError(ValueError):
    """A bad params file or value; the message is one line naming the key, value and fix."""


class DataError(Exception):
    """A data source or prepared directory is unusable; the message says what to fix."""


class BusyError(RuntimeError):
    """Another process holds what this one needs (a run directory's trainer lock)."""


class PlacementError(RuntimeError):
    """No device is free for this process (distributed.py)."""


class ReportError(ValueError):
    """A report step's input (a run directory, a table's JSON) that is missing or unreadable."""


def reason(e: BaseException) -> str:
    """An exception's message on one line, for an error that names its cause."""
    return " ".join(str(e).split()) or type(e).__name__
