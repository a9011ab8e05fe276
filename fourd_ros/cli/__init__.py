"""Command-line interface `fourd` (subcommands: synth, run, eval, bench, demo)."""
