"""launcher: the ``simgym`` command — check a sim integration, train, submit.

Modules: ``cli`` (argument parsing only), ``checkrun`` (``simgym check``:
start or reach the sim server, run the conformance kit), ``report`` (tables).
"""
