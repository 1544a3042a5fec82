"""`python -m hostos`: the same as the `hostos` command."""

from hostos.cli.launch import main

main()
