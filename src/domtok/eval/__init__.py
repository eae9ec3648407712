"""Evaluations. The probes' default categories live here, torch- and import-free, so the spec
checks in `domtok.rundir` can name them without importing an evaluation module."""

# the categories the reference study's probes asked (`eval.probes.ProbesConfig.categories` default)
REFERENCE_CATEGORIES = ("mul_table", "mul_multidigit", "addition")
