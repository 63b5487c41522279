"""The command line: parses, calls ``commands``, renders. Imports nothing heavy at start-up."""
