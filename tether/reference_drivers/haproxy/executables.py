"""Finding the programs the haproxy driver runs, wherever Debian puts them."""

from __future__ import annotations

import os
import shutil

from tether.drivers.base import InvalidConfiguration

#: Where Debian installs daemons and network tools, which the PATH of a user
#: other than root (/usr/bin:/bin) leaves out.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_executable(binary: str, package: str, option: str | None) -> str:
    """The executable ``binary`` names, looked for on PATH and then in the
    sbin directories.

    :param package: the Debian package that installs it, for the message.
    :param option: the ``[driver:haproxy]`` option that names it, if any.
    :raises InvalidConfiguration: saying where it was looked for and what to do.
    """
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    found = shutil.which(binary, path=search)
    if found is None:
        where = "" if os.sep in binary else f" on PATH or in {', '.join(SBIN)}"
        named = f"[driver:haproxy] {option} {binary!r}" if option else repr(binary)
        fix = f", or set [driver:haproxy] {option} to its path" if option else ""
        raise InvalidConfiguration(
            f"{named} is not installed{where}; install Debian's {package} package{fix}."
        )
    return found
