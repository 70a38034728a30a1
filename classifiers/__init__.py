"""Department and urgency classification: training, features, evaluation (never imports daemon)."""
