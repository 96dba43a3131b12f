"""What every stage process shares: atomic files, thread sizing, the machine,
derived random streams, code fingerprints, a stage command's errors and --help."""
