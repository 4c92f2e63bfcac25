"""Aggregators: what a capture keeps of each batch (`aggregate = ...`), one mode a file;
`create.create_aggregator` builds the one a capture statement asks for."""
