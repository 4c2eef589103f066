"""Analysis tools for polarref (real-model key captures, experiments)."""
