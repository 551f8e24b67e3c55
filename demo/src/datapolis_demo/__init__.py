"""A living demo metropolis: organisations, datasets, streamed records and the story of consent."""
