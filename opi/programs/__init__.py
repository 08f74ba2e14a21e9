"""The NCCS test programs: one module per program, each with ``main(argv) -> int`` (see obsctl/cli_programs.py)."""
