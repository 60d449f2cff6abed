"""Sub-commands of the `tctseg` CLI, one module each (discovered automatically)."""
