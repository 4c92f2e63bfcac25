"""Interventions at run time: the values they read from earlier run folders (`sources`), the
channels (`units`) and tokens (`positions`) they change, the edit functions the compiler's
`Edit` modules call (`edits`), and the `intervention/...` result tensors (`results`)."""
