"""purerl: process-supervised RL of language models with PURE's min-form credit assignment."""

__version__ = "0.1.0"
