"""`python -m hostos`: the same as the `hostos` command."""

from hostos.launch import main

main()
