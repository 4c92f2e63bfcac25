"""torch.fx passes that turn a checked spec into an instrumented Hydra model.

Entry points (import them from their modules; this package imports nothing eagerly):
- `expc.compiler.plan.build_plan(experiment, *, n_layers) -> Plan` — IR -> result keys.
- `expc.compiler.pipeline.compile_experiment(experiment, model, sinks, edits, *,
  keep_output=False)` and `compile_plan(plan, model, sinks, edits, *, keep_output=False)`
  -> `Compiled`.
- `expc.compiler.emit.emit(experiment, "graph" | "code" | "dot") -> str`.
The passes, in pipeline order: `resolve`, `intervene`, `attention`, `effect_taps`,
`instrument`, `strip`, `prune`, run by `manager.run_passes`.
"""
