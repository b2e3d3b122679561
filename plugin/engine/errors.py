"""Exceptions the engine raises; algorithms turn them into QgsProcessingException."""


class S2Error(Exception):
    """A failure the user can act on. ``str(error)`` is one sentence that names the parameter or service."""


class ParameterError(S2Error):
    """A parameter value is unusable; the message names the parameter."""

    def __init__(self, parameter, message):
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class ServiceError(S2Error):
    """A remote service failed or answered something we cannot use; the message names the service."""


class Cancelled(S2Error):
    """The user cancelled; work stops and leaves only complete or resumable files."""

    def __init__(self, message="Cancelled by the user."):
        super().__init__(message)


class MissingDependency(S2Error):
    """An optional Python package is missing; the message says how to install it into QGIS's Python."""

    def __init__(self, module, pip_name=None, needed_for=""):
        self.module = module
        self.pip_name = pip_name or module
        purpose = f" {needed_for}" if needed_for else ""
        # Extras ("sentinelhub[aws]") must be quoted for the shell, not in the sentence.
        argument = f'"{self.pip_name}"' if "[" in self.pip_name else self.pip_name
        super().__init__(
            f"The Python package '{self.pip_name}' is needed{purpose} but is not installed in the Python that "
            f"QGIS uses; install it with: {install_command(argument)}"
        )


def install_command(pip_name):
    """The command that installs a PyPI package into the Python QGIS runs on this platform."""
    import sys

    if sys.platform.startswith("win"):
        return f"in the OSGeo4W Shell: python -m pip install {pip_name}"
    if sys.platform == "darwin":
        return f"/Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install {pip_name}"
    return f"python3 -m pip install --user --break-system-packages {pip_name}"
