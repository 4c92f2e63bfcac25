"""expc: a declarative language and compiler for activation experiments on transformers.

The repository keeps the design card's folders at its root (`grammar/`, `spec/`, `models/`,
`compiler/`, `runtime/`, `report/`, `cli/`); installed, each is a subpackage of `expc`.
The notebook API (`expc.load`, `expc.compile`, `expc.run`, `expc.open_run`) arrives with the
runtime; importing `expc` itself stays cheap so that `expc check` never imports torch.
"""

__version__ = "0.1.0"
