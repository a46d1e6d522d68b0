"""The Darwin-Goedel loop: select a parent, mutate weights (ES) and/or code (self-edit), evaluate."""
