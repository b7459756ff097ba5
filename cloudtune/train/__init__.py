"""Built-in fine-tuning recipes. They read only a RuntimeContext, never a provider variable."""
