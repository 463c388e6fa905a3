"""The recipes' library code: Hydra configs (config), the trainer (train), the proxy sweep (tune) over the
trials ledger (ledger), the pipeline's stages (stages), the report (report), wandb (loggers) and the
console side of a recipe run (console)."""
