"""The data of a run: `sources` reads a data file's samples, `load` tokenises and packs them,
`batches` plans, pads and shards the batches."""
