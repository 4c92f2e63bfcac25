"""The `.exp` language front end: parser, attrs IR, semantic checks, diagnostics, formatter.

This package never imports torch: `expc check` must stay a fast CI tool.
"""
