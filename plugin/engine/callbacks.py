"""The progress and cancellation convention used by every engine function."""

from .errors import Cancelled


def no_progress(fraction, message=""):
    """Default ``progress`` callback: ignore reports."""


def never_cancelled():
    """Default ``is_cancelled`` callback."""
    return False


def check_cancelled(is_cancelled):
    """Raise :class:`Cancelled` when the user asked to stop; call it between units of work."""
    if is_cancelled and is_cancelled():
        raise Cancelled()


def scaled(progress, start, end):
    """A progress callback that maps 0..1 onto ``start..end`` of ``progress`` (for steps of a larger job)."""

    def report(fraction, message=""):
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report
