"""Subcommands of the ``augment`` CLI that need no torch; each is imported only when it runs."""
