"""The `towerline` command line: ``app`` (commands and the error handler), ``options``
(the shared option vocabulary, the only reader of the environment) and one module per
group of commands. Nothing below the CLI imports it."""
