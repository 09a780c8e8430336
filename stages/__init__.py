"""One module per stage kind: KIND + Config + OUTPUTS + run(cfg, ctx). See ringctl.recipe.registry."""
