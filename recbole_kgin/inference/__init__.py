"""A trained model put to use: recommendations, vectors, explanations."""
