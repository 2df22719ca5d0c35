"""Generated code for the ``simgym.v1`` protocol (do not edit; run ``make proto``)."""
