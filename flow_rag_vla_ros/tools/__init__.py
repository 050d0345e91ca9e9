"""Command-line tools behind `flow-rag-vla` subcommands (collect, train, eval, bench, record, replay, export)."""
