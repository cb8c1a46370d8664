"""The ``purerl`` command: one small function per subcommand, and the reports they print."""
