"""Sub-commands of the ``onevision`` CLI. Each module exposes ``register(subparsers)`` and keeps imports light."""
