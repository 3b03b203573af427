"""The ``boxfs`` command line: accounts, the drive without a mount, shared folders, the mount
and its status.

``main`` runs one command (the console script ``boxfs``); ``ExitCode`` holds the exit codes
it documents (``docs/cli.md`` is the reference). The modules, from the top down (an
import-linter contract in ``pyproject.toml`` keeps this order):

- ``parser``: ``build_parser`` and ``main``, where an error becomes one line and an exit code;
- ``commands_account``, ``commands_files``, ``commands_history``, ``commands_mount``,
  ``commands_sharing``, ``commands_status``: the ``cmd_*`` handlers, which parse, call what
  is below and print;
- ``drive`` (the drive at its head through the server: reads, downloads, uploads, ops),
  ``device_state`` (this home's journal, mount process and server, for ``status`` and
  ``sync``), ``paths`` (paths as the user types them);
- ``exit_codes`` (the exit codes and the exception table) and ``output`` (what the terminal
  shows: sizes, times, escaped names, progress).

Only ``commands_mount`` and ``device_state`` import ``boxfs.mount`` (and with it pyfuse3),
inside the functions that need it: a command starts without it. Nothing here imports
``server``.
"""

from boxfs.cli.exit_codes import ExitCode
from boxfs.cli.parser import main

__all__ = ["ExitCode", "main"]
