"""Channel adapters: each translates between one platform and the core, with no business logic."""
