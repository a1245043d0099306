"""Subcommands of the ``stexture`` command, one module each (see :mod:`stexture.cli`)."""
