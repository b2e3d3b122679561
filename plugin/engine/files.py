"""Files and folders the engine writes: nothing half-written under a final name."""

import os
import re
import shutil

from .errors import ParameterError


def writable_folder(folder, parameter="OUTPUT_FOLDER"):
    """Create ``folder`` if needed; ParameterError naming ``parameter`` when it cannot be created or written."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise ParameterError(parameter, f"cannot create the folder {folder} ({error.strerror}).") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ParameterError(parameter, f"the folder {folder} is not writable; choose another folder.")


def remove(path):
    """Remove a file, link or folder tree; nothing there is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def move_into_place(temp, final):
    """Rename a complete ``temp`` to ``final``; an existing ``final`` is swapped out first, so the final name
    never points at a half-removed folder."""
    if not os.path.lexists(final):
        os.rename(temp, final)
        return
    old = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.replaced")
    remove(old)
    os.rename(final, old)
    os.rename(temp, final)
    remove(old)


def product_stem(path):
    """A product's name without folder, ``.SAFE`` or ``.zip``."""
    name = os.path.basename(os.path.normpath(path))
    return re.sub(r"(\.SAFE)?(\.zip)?$", "", name, flags=re.IGNORECASE)
