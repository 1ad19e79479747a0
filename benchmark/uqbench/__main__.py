"""`python -m uqbench` runs the CLI."""

from uqbench.cli import main

main()
