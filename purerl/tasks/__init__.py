"""Built-in reasoning tasks."""
