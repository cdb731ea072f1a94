"""The `sqlarbiter` command line: the top layer, which assembles the commands of every other package. Its entry
point is `cli.main.main` (the console script, `python -m cli` and `python -m cli.main`). The package does not import
it: `python -m cli.main` would then find the module already imported and warn."""
