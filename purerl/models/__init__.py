"""Model loading and the built-in models (tokenizer, warm-started policy, built-in PRM and its training)."""
