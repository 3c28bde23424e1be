"""The application service: the Workspace that loads aggregates, decides and appends, and the bootstrap that wires it."""
