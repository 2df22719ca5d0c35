"""``python -m simserver`` runs the ``simserver`` command."""

from simserver.cli import main

main()
