"""`expc prune`: remove the lowest-scored units of a checkpoint (contracts §8, docs/prune.md).

`units` says which units a metric's scores rank, `scores` reads a finished run and picks the
units of each layer, `rules` maps the removal onto config fields and tensor slices,
`stream` and `writer` write the folder, `export.prune` ties them together.
"""
