"""One module per stage kind: Config + OUTPUTS + run(cfg, ctx). See ringctl.pipeline.registry."""
