"""obsctl package."""
