"""Code that runs inside the training container. Never imports launchers or cloud SDKs at module level."""
