"""Effects: per-sample measures of how a head's outputs differ from a reference head's or how
well it predicts the data (`effect` statements, contracts §5). One state a metric on a shared
base (`base.py`); `create.create_effect` builds the one an `EffectEntry` asks for, and
`results.effect_results` turns them into `effect/...` tensors with their manifest entries."""
