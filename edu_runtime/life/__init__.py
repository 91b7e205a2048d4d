"""Container life after the start: states, records and names (``states``), Docker's verbs
for a container that exists (``control``: ps, inspect, start, stop, kill, rm, pause, logs),
the supervisor that owns detached containers and its client (``supervisor``, ``client``),
entering a running container (``enter``: ``edu exec``), and copying in and out of one
(``cp``).

Introduced in notebooks/07-run-it.
"""
