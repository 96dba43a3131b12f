"""The data sets, verified by checksum."""
