"""`python -m ra_lite` is the `ra-lite` command."""

from ra_lite.cli import main

main()
