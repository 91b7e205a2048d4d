"""The ``edu`` command: a thin layer that parses, calls edu_runtime or vm_compare, and prints."""
