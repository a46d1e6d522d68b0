"""One module per `lineage` command group."""
