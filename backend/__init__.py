"""A Label Studio ML backend with a live active-learning loop for tweet classification."""
