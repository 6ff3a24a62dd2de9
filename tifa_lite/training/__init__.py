"""The train path: one recipe run (runner), its outputs and resume, the budgets the
notebooks add, the quickstart and the multi-stage pipeline."""
