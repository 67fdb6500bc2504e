"""``python -m tiangong`` runs the command line."""

from tiangong.cli import main

main()
