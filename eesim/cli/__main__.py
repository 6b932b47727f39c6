"""`python -m eesim.cli ...` runs the command line."""

from eesim.cli import main

main()
