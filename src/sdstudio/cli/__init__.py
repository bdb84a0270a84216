"""Command-line interface: one module per subcommand, `main.py` dispatches."""
